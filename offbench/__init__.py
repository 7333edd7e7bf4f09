"""offbench: a JAX benchmark suite for offline, offline-to-online and hybrid RL on MuJoCo."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
