"""offbench: a JAX benchmark suite for offline, offline-to-online and hybrid RL on MuJoCo."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR, default
    ~/.cache/offbench/jax), shared by the CLI, tests and benchmarks."""
    import os
    from pathlib import Path

    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                           str(Path.home() / ".cache" / "offbench" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
