"""Critic probe: what a trained offline agent's critic thinks of the data, of its own policy
and of random actions, on the dataset's states.

A learning curve says *that* an agent misses; this says where its value function stands. For
each seed of a run folder's latest checkpoint, on `samples` dataset states s (the same states
for every seed and cell):

    q_data, q_policy, q_random   mean over states of the ensemble-mean Q(s, a) at the dataset's
                                 action, the deterministic policy's action pi(s), and a uniform
                                 random action
    policy_advantage             mean of min_i Q_i(s, pi(s)) - min_i Q_i(s, a_data): how much
                                 better than the data the pessimistic (min) critic rates the
                                 policy; large and positive with a policy far from the data means
                                 the critic does not penalize leaving the data
    action_gap                   q_data - q_random: how much the critic tells the data's actions
                                 from arbitrary ones (0: Q is flat over actions)
    std_data, std_policy, std_random   mean spread (std) of Q over the ensemble members: the
                                 uncertainty SAC-N/EDAC rely on to penalize unseen actions
    policy_data_mse              mean squared distance of pi(s) from a_data, per action dim
    random_data_mse              the same for the uniform random actions (1/3 + E[a_data^2]):
                                 the scale policy_data_mse is read against
    saturated                    fraction of pi(s)'s components with |a| > 0.99

Algorithms declare `q_values(state, obs, action) -> (num_critics, batch)` to be probed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

SATURATION = 0.99
COLUMNS = ("q_data", "q_policy", "q_random", "policy_advantage", "action_gap", "std_data",
           "std_policy", "std_random", "policy_data_mse", "random_data_mse", "saturated")


def probe_state(algo: Any, state: Any, obs: jax.Array, data_actions: jax.Array,
                random_actions: jax.Array, key: jax.Array) -> dict[str, float]:
    """The probe's numbers (module docstring) for one seed's algorithm state."""
    policy_actions = algo.act(state, obs, key, True)
    q = {name: algo.q_values(state, obs, actions)  # (num_critics, batch)
         for name, actions in (("data", data_actions), ("policy", policy_actions),
                               ("random", random_actions))}
    out = {f"q_{name}": float(v.mean()) for name, v in q.items()}
    out["policy_advantage"] = float((q["policy"].min(0) - q["data"].min(0)).mean())
    out["action_gap"] = out["q_data"] - out["q_random"]
    out.update({f"std_{name}": float(v.std(0).mean()) for name, v in q.items()})
    out["policy_data_mse"] = float(((policy_actions - data_actions) ** 2).mean())
    out["random_data_mse"] = float(((random_actions - data_actions) ** 2).mean())
    out["saturated"] = float((jnp.abs(policy_actions) > SATURATION).mean())
    return out


def probe_run(folder: Path, samples: int = 2048, seed: int = 0,
              data_root: str | Path | None = None) -> pd.DataFrame:
    """One row per seed of an offline run folder (or store cell): the probe at its latest
    checkpoint, with that checkpoint's update count and the seed's last normalized score."""
    from offbench.algorithms import contract
    from offbench.loops import offline
    from offbench.reports.offline import run_label  # ALGO[variant] for a grid's cells

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    folder = Path(folder)
    check_dataset_version(folder)
    problem, arrays, carry, done = offline.restore(folder, data_root)
    if contract(problem.algo).q_values is None:
        raise ValueError(f"{problem.algo.__name__} has no critic to probe (no q_values)")
    size = arrays["obs"].shape[0]
    rng = np.random.default_rng(seed)
    index = rng.choice(size, min(samples, size), replace=False)
    obs, data_actions = arrays["obs"][index], arrays["action"][index]
    random_actions = jnp.asarray(rng.uniform(-1.0, 1.0, data_actions.shape), jnp.float32)
    settings = json.loads((folder / "settings.json").read_text())
    last = last_scores(folder, done)
    rows = []
    for position in range(settings["seeds"]):
        state = jax.tree.map(lambda x, p=position: x[p], carry.algo)
        seed_number = settings["first_seed"] + position
        row = {"run": folder.name, "algorithm": run_label(folder, settings),
               "dataset": settings["dataset"], "seed": seed_number,
               "updates": done * problem.config.eval_every,
               "diverged": bool(carry.diverged[position]),
               "score": last.get(seed_number, float("nan"))}
        row.update(probe_state(problem.algo, state, obs, data_actions, random_actions,
                               jax.random.PRNGKey(seed)))
        rows.append(row)
    return pd.DataFrame(rows)


def probe_runs(folders: list[Path], samples: int = 2048) -> pd.DataFrame:
    """probe_run of every folder, one table; two runs of one algorithm on one dataset are named
    apart as in the offline report (their other settings, their update counts)."""
    from offbench.reports.offline import distinct_labels, run_overrides

    tables = [probe_run(f, samples) for f in folders]
    labels = distinct_labels([(t.algorithm.iloc[0], t.dataset.iloc[0], run_overrides(Path(f)),
                               int(t.updates.iloc[0])) for f, t in zip(folders, tables,
                                                                       strict=True)])
    for table, label in zip(tables, labels, strict=True):
        table["algorithm"] = label
    return pd.concat(tables, ignore_index=True)


def with_critics(folders: list[Path], log=print) -> list[Path]:
    """The run folders whose algorithm has critics to probe (the others are named and left
    out, e.g. BC in a sweep's cells)."""
    from offbench.algorithms import contract, load_algorithm

    kept = []
    for folder in map(Path, folders):
        settings = folder / "settings.json"
        name = json.loads(settings.read_text())["algorithm"] if settings.exists() else None
        if name is not None and contract(load_algorithm(name)).q_values is None:
            log(f"left out {folder.name}: {name} has no critic to probe")
            continue
        kept.append(folder)
    return kept


def last_scores(folder: Path, periods_done: int) -> dict[int, float]:
    """seed -> normalized score of the checkpoint's last evaluation (from metrics.csv)."""
    path = folder / "metrics.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    table = table[table.period == periods_done - 1]
    return dict(zip(table.seed.astype(int), table.normalized_score, strict=True))


def check_dataset_version(folder: Path) -> None:
    """A store cell trained on an older build of its dataset cannot be probed on the current
    one (its states and normalization would not be the ones it learned on)."""
    from offbench.data.builder import dataset_fingerprint
    from offbench.reports.offline import cell_config

    config = cell_config(folder)
    if not config:
        return  # a plain `offbench run` folder records no dataset version
    recorded = config.get("dataset_sha256")
    current = dataset_fingerprint(config["dataset"])
    if recorded is not None and current is not None and recorded != current:
        raise ValueError(f"{folder.name} was trained on an older build of {config['dataset']} "
                         f"(version {recorded}, now {current}); rerun its sweep to probe it")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per run (score: mean and the per-seed values)."""
    group = table.groupby(["algorithm", "dataset", "run", "updates"], sort=False)
    means = group[["score", *COLUMNS]].mean()
    means.insert(1, "seed_scores", group["score"].apply(
        lambda s: " ".join(f"{v:.1f}" for v in s)))
    return means.reset_index().drop(columns="run")


def write_report(folders: list[Path], out: Path, samples: int = 2048,
                 title: str = "Critic probe") -> pd.DataFrame:
    """The probe of every run folder as Markdown (+ a CSV of the per-seed rows beside it)."""
    from offbench.io import write_text_atomic
    from offbench.provenance import record

    table = probe_runs(folders, samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".csv"), table.to_csv(index=False))
    prov = record()
    doc = __doc__.split("\n\n", 2)[2].split("Algorithms declare")[0].rstrip()
    text = [
        f"# {title}", "",
        f"Report by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores. The runs' own "
        "commands are in their run.json. Each run is probed at its latest checkpoint "
        f"(`updates`), on the same {samples} states drawn from its dataset "
        "(offbench/reports/probe.py); "
        "score is the normalized score of that checkpoint's evaluation.", "",
        "```", doc, "```", "",
        "## Mean over seeds", "", summary(table).round(3).to_markdown(index=False), "",
        "## Per seed", "", table.drop(columns="run").round(3).to_markdown(index=False), ""]
    write_text_atomic(out, "\n".join(text))
    return table
