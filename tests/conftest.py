import os
from functools import cache

import pytest

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


# A tiny random-policy Hopper dataset in Minari's format, shared by the offline and O2O tests.
TINY_DATASET = "test/hopper/random-v0"


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    from offbench.data import builder

    root = tmp_path_factory.mktemp("minari")
    episodes, _ = builder.generate("hopper", "random", 2000, seed=0, log=lambda *_: None)
    builder.write_minari(root, TINY_DATASET, episodes, "hopper",
                         {"ref_min_score": -20.0, "ref_max_score": 3000.0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        yield root


def comparable_metrics(df):
    """A metrics table without wall times, in a fixed row order (for run-vs-run equality)."""
    return df.drop(columns="wall_s").sort_values(["seed", "period"]).reset_index(drop=True)
