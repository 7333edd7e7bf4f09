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


# The offbench CLI in a subprocess that dies (os._exit(17), no cleanup) right after its Nth
# saved chunk (driver.run's after_chunk) or its Nth cell of a sweep (run_sweep's after_cell):
# how the resume-after-kill tests kill a run at a known point, with no hook in the CLI itself.
KILLED_CLI = """
import os, sys
from offbench import cli
from offbench.harness import sweep
from offbench.loops import driver

what, n = sys.argv[1], int(sys.argv[2])

def die_after(count):
    if count >= n:
        sys.stdout.flush()
        os._exit(17)

real_run, real_sweep = driver.run, sweep.run_sweep
if what == "chunks":
    driver.run = lambda **kw: real_run(**{**kw, "after_chunk": die_after})
else:
    sweep.run_sweep = lambda *a, **kw: real_sweep(*a, **{**kw, "after_cell": die_after})
sys.exit(cli.main(sys.argv[3:]))
"""


def run_cli_killed(args: list[str], after_chunks: int | None = None,
                   after_cells: int | None = None, env=None, timeout: int = 900):
    """`offbench ARGS` killed after that many chunks (or sweep cells); returncode 17."""
    import subprocess
    import sys

    what, n = ("chunks", after_chunks) if after_chunks is not None else ("cells", after_cells)
    return subprocess.run([sys.executable, "-c", KILLED_CLI, what, str(n), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
