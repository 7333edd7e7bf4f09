import os
from functools import cache

# Quiet XLA's benign cache-loading log spam in failure output (see offbench/cli.py main).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax

import offbench
import offbench.envs as envs

# Persistent XLA compilation cache: the second `make test` on a machine skips most compiles.
offbench.enable_compilation_cache()

TASKS = ("halfcheetah", "hopper", "walker2d", "ant")


@cache
def bare_env(task: str, backend: str):
    """One bare env (and its jitted step) per task and backend, shared by all tests."""
    env = envs.make(task, backend, wrap=False)
    return env, jax.jit(env.step), jax.jit(jax.vmap(env.step))
