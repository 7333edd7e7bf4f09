"""Online-phase throughput of the O2O/hybrid loop: RLPD (hybrid, offline ratio 0.5) env steps/s
at UTD 1 and UTD 20, for 1 and 4 vmapped seeds, on the C backend.

The dataset is synthetic (random arrays of the task's shapes): throughput depends on its shapes,
not on its values, and the benchmark then needs no built dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

import offbench.envs as envs
from offbench.io import write_text_atomic
from offbench.loops import o2o, offline
from offbench.perf import measure_cold_compiles, time_one_period
from offbench.provenance import record

DATASET_SIZE = 100_000


def synthetic_prepared(task: str, size: int = DATASET_SIZE) -> offline.Prepared:
    env = envs.make(task, "mujoco", wrap=False)
    o, a = env.observation_size, env.action_size
    rng = np.random.default_rng(0)
    arrays = {"obs": rng.normal(size=(size, o)), "action": rng.uniform(-1, 1, (size, a)),
              "reward": rng.normal(size=size), "next_obs": rng.normal(size=(size, o)),
              "terminal": np.zeros(size)}
    return offline.Prepared({k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()},
                            np.zeros(o, np.float32), np.ones(o, np.float32), 1.0, 0.0)


def bench(task: str, seeds: int, utd: int, env_steps: int, repeats: int,
          algo_config: Any = None, episode_length: int | None = None) -> dict:
    """Env steps/s of one compiled online period of `env_steps` steps (hybrid RLPD, no warm-up,
    one evaluation episode), all seeds vmapped."""
    from offbench_baselines import rlpd

    algo_config = dataclasses.replace(algo_config or rlpd.Config(), utd=utd)
    config = o2o.resolve(o2o.MixedConfig(
        mode="hybrid", offline_updates=0, online_steps=env_steps, eval_every=env_steps,
        eval_episodes=1, checkpoint_every=env_steps, warmup_steps=0, backend="mujoco",
        episode_length=episode_length), algo_config)
    prepared = synthetic_prepared(task, min(DATASET_SIZE, max(env_steps, 1000)))
    problem = o2o.Problem(rlpd, algo_config, task, config, prepared)
    arrays = prepared.arrays
    compile_s, total_s, _, _ = time_one_period(o2o, problem, arrays, seeds, repeats)
    return {"algorithm": "rlpd", "task": task, "utd": utd, "seeds": seeds,
            "env_steps_per_s": seeds * env_steps / total_s,
            "per_seed_env_steps_per_s": env_steps / total_s,
            "updates_per_s": seeds * env_steps * utd / total_s,
            "compile_s": compile_s, "total_s": total_s}


def run(task: str, env_steps: int, repeats: int, utds=(1, 20), seeds=(1, 4),
        algo_config: Any = None, episode_length: int | None = None, log=print) -> pd.DataFrame:
    rows = []
    for utd in utds:
        for n in seeds:
            rows.append(bench(task, n, utd, env_steps, repeats, algo_config, episode_length))
            log(rows[-1])
    return pd.DataFrame(rows)


def write_report(df: pd.DataFrame, out: Path, prov: dict) -> None:
    write_text_atomic(out / "o2o.csv", df.to_csv(index=False, float_format="%.4g"))
    lines = [
        "# O2O/hybrid online-phase throughput (RLPD, offline ratio 0.5, C backend)", "",
        f"Produced by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores.", "",
        "Medians of repeated runs of one compiled online period (env step, replay, `utd` RLPD "
        "updates on half-dataset half-replay minibatches; no warm-up; one evaluation episode "
        f"per run). Synthetic dataset of {DATASET_SIZE} transitions (shapes only matter). "
        "RLPD's defaults: 10 LayerNorm critics, 2x256 nets, batch 256.", "",
        df.to_markdown(index=False, floatfmt=".3g"), ""]
    write_text_atomic(out / "o2o.md", "\n".join(lines))


def main(task: str, env_steps: int, repeats: int, out: Path) -> None:
    started = record()  # the commit of the code that runs
    measure_cold_compiles()
    df = run(task, env_steps, repeats)
    write_report(df, out, started)
