import os
from functools import cache
from pathlib import Path

import jax

# Persistent XLA compilation cache: the second `make test` on a machine skips most compiles.
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "offbench" / "jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import offbench.envs as envs  # noqa: E402

TASKS = ("halfcheetah", "hopper", "walker2d", "ant")


@cache
def bare_env(task: str, backend: str):
    """One bare env (and its jitted step) per task and backend, shared by all tests."""
    env = envs.make(task, backend, wrap=False)
    return env, jax.jit(env.step), jax.jit(jax.vmap(env.step))
