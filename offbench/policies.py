"""Behaviour policies: the SAC actors that generate the datasets, and how they are chosen.

`make policies` trains SAC on each task with `train-online --snapshots` (the actor saved after
every evaluation), then `offbench policies select` picks from that run, as D4RL defines them:

- `expert`: the best-evaluated snapshot of the last 10% of training;
- `medium`: the snapshot whose return is closest to one third of the expert's normalized score;
- replay snapshots evenly spaced in training time, up to `medium` (for `medium-replay`) and up to
  `expert` (for `full-replay`).

Each chosen actor is re-evaluated, acting as it does in the datasets (sampling from its
tanh-Gaussian), and the reference scores are measured: `ref_min` = mean return of the uniform
random policy, `ref_max` = mean return of `expert`, 100 episodes each. Everything lands in
tasks/policies/TASK/ (small msgpack files + policies.json with hashes, returns and the command),
so building datasets never trains anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import serialization

import offbench.envs as envs
from offbench.envs.spec import TASKS_DIR
from offbench.io import write_bytes_atomic, write_text_atomic
from offbench.loops import rollout
from offbench.networks import TanhGaussianActor, tanh_gaussian_sample
from offbench.provenance import record
from offbench.score import normalized_score

POLICIES_DIR = TASKS_DIR / "policies"
REFERENCE_EPISODES = 100
# What published SAC reaches at 1M env steps on the Gymnasium v5 tasks (the datasets issue's
# bar for an expert policy; SAC paper / CleanRL / CORL's online runs): datasets.md says per
# task whether our expert reaches it.
PUBLISHED_SAC_1M = {"halfcheetah": 9000.0, "hopper": 3000.0, "walker2d": 4000.0, "ant": 4000.0}
SELECTION_EPISODES = 20  # per candidate snapshot when searching for `medium`
MEDIUM_FRACTION = 1 / 3
MEDIUM_REPLAY_SNAPSHOTS = 4  # evenly spaced in training time, the last one is `medium`
FULL_REPLAY_SNAPSHOTS = 6  # evenly spaced in training time, the last one is `expert`

KIND_POLICIES = ("medium", "expert")  # kinds rolled out from one named policy


@dataclasses.dataclass(frozen=True)
class BehaviourPolicy:
    task: str
    name: str
    hidden: tuple[int, ...]
    params: Any
    sha256: str


def actor_network(hidden: tuple[int, ...], action_size: int) -> TanhGaussianActor:
    return TanhGaussianActor(tuple(hidden), action_size)


def stochastic_policy(hidden: tuple[int, ...], action_size: int, params: Any) -> rollout.Policy:
    """act(obs, key): a sample of the tanh-Gaussian actor, as the behaviour policy acts."""
    net = actor_network(hidden, action_size)

    def act(obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std = net.apply(params, obs)
        return tanh_gaussian_sample(mean, log_std, key)[0]
    return act


def mixture_policy(hidden: tuple[int, ...], action_size: int, stacked_params: Any,
                   assignment: np.ndarray) -> rollout.Policy:
    """Env i acts with policy assignment[i] of `stacked_params` (leading policy axis)."""
    net = actor_network(hidden, action_size)
    per_env = jax.tree.map(lambda p: jnp.asarray(p)[jnp.asarray(assignment)], stacked_params)

    def act(obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std = jax.vmap(net.apply)(per_env, obs)
        return tanh_gaussian_sample(mean, log_std, key)[0]
    return act


def uniform_policy(action_size: int) -> rollout.Policy:
    def act(obs: jax.Array, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, (obs.shape[0], action_size), minval=-1.0, maxval=1.0)
    return act


# --- committed policies -----------------------------------------------------------------------

def policy_dir(task: str) -> Path:
    return POLICIES_DIR / task


@cache
def manifest(task: str) -> dict:
    """tasks/policies/TASK/policies.json: the chosen policies, reference scores, provenance."""
    path = policy_dir(task) / "policies.json"
    if not path.exists():
        envs.get_spec(task)  # unknown task -> the list of valid ones
        raise FileNotFoundError(f"no behaviour policies for '{task}' ({path} is missing); "
                                f"run `make policies POLICY_TASKS={task}`")
    return json.loads(path.read_text())


SUCCESS_REFERENCE = (0.0, 1.0)  # navigation: a return is 1 if the goal was reached, else 0


def reference_scores(task: str) -> tuple[float, float]:
    """(ref_min, ref_max): mean returns of the uniform random and the expert policy. Navigation
    tasks (an episode ends at the first success, so its return is 0 or 1) have 0 and 1 by
    definition, so the normalized score is 100 x the success rate (as D4RL's AntMaze is read)."""
    if isinstance(envs.get_spec(task), envs.MazeSpec):
        return SUCCESS_REFERENCE
    info = manifest(task)["reference_scores"]
    return float(info["ref_min"]), float(info["ref_max"])


def load_policy(task: str, name: str) -> BehaviourPolicy:
    info = manifest(task)
    if name not in info["policies"]:
        raise ValueError(f"task '{task}' has no behaviour policy '{name}'; it has "
                         f"{sorted(info['policies'])}")
    entry = info["policies"][name]
    data = (policy_dir(task) / entry["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"behaviour policy {task}/{entry['file']} does not match its sha256 in "
                         f"policies.json (file {digest[:12]}, recorded {entry['sha256'][:12]}); "
                         "restore it with git or rerun `make policies`")
    params = serialization.msgpack_restore(data)
    return BehaviourPolicy(task, name, tuple(info["hidden"]), params, digest)


# --- choosing the policies from a training run ------------------------------------------------

def snapshot_path(run: Path, period: int, seed: int) -> Path:
    return run / "snapshots" / f"seed{seed}" / f"period_{period:05d}.msgpack"


def _evaluator(task: str, hidden: tuple[int, ...] | None, episodes: int):
    """jit(params, key) -> returns of the stochastic actor (or, hidden=None, of uniform random
    actions); params are an argument so one compilation serves every snapshot."""
    env = envs.make(task, auto_reset=False)

    def run(params: Any, key: jax.Array) -> jax.Array:
        act = (uniform_policy(env.action_size) if hidden is None
               else stochastic_policy(hidden, env.action_size, params))
        return rollout.episode_returns(env, act, key, episodes)
    return jax.jit(run)


def _returns_of_many(task: str, hidden: tuple[int, ...], params: list, episodes: int,
                     key: jax.Array) -> list[float]:
    """Mean return of each of several actors, `episodes` each, in one vmapped rollout."""
    env = envs.make(task, auto_reset=False)
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *params)
    net, n = actor_network(hidden, env.action_size), len(params)

    def act(obs: jax.Array, k: jax.Array) -> jax.Array:  # envs grouped by actor
        mean, log_std = jax.vmap(net.apply)(stacked, obs.reshape(n, episodes, -1))
        return tanh_gaussian_sample(mean, log_std, k)[0].reshape(n * episodes, -1)
    returns = jax.jit(lambda k: rollout.episode_returns(env, act, k, n * episodes))(key)
    return [float(r) for r in np.asarray(returns).reshape(n, episodes).mean(1)]


def _evenly_spaced(last: int, count: int) -> list[int]:
    """`count` periods evenly spaced over [0, last], ending at `last` (fewer if last is small)."""
    return sorted({round(last * i / (count - 1)) for i in range(count)}) if count > 1 else [last]


def select(task: str, run: Path, seed: int = 0, command: str | None = None, log=print) -> dict:
    """Choose, evaluate and write the behaviour policies of `task` from training run `run`."""
    made = record()  # before anything is written, so the commit is not marked dirty by it
    run = Path(run)
    settings = json.loads((run / "settings.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv").query("seed == @seed").sort_values("period")
    metrics = metrics[[snapshot_path(run, p, seed).exists() for p in metrics.period]]
    if metrics.empty:
        raise FileNotFoundError(f"{run} has no policy snapshots for seed {seed}; train with "
                                "`offbench train-online sac TASK --snapshots` (make policies)")
    hidden = tuple(settings["algo_config"]["hidden"])
    evaluators = {n: _evaluator(task, hidden, n) for n in (REFERENCE_EPISODES, SELECTION_EPISODES)}
    eval_key = jax.random.PRNGKey(12345)
    steps_per_period = settings["online_config"]["eval_every"]

    def params(period: int) -> Any:
        return serialization.msgpack_restore(snapshot_path(run, period, seed).read_bytes())

    def returns(period: int, episodes: int) -> np.ndarray:
        return np.asarray(evaluators[episodes](params(period), eval_key))

    log(f"[{task}] reference: random policy, {REFERENCE_EPISODES} episodes")
    random_returns = np.asarray(_evaluator(task, None, REFERENCE_EPISODES)(None, eval_key))
    ref_min = float(random_returns.mean())
    last_period = int(metrics.period.max())
    tail = metrics[metrics.period > last_period - max(1, round(0.1 * (last_period + 1)))]
    expert_period = int(tail.loc[tail.eval_return.idxmax(), "period"])
    log(f"[{task}] expert: period {expert_period} (of {last_period + 1} trained), "
        f"{REFERENCE_EPISODES} episodes")
    expert_returns = returns(expert_period, REFERENCE_EPISODES)
    ref_max = float(expert_returns.mean())

    def normalized(value: float) -> float:
        return normalized_score(value, ref_min, ref_max)

    # medium: every snapshot before the expert is evaluated as it acts in the data (sampling;
    # mid-training policies often score far below their deterministic training evaluations),
    # all in one vmapped rollout; the one nearest one third of the expert's score wins.
    goal = 100.0 * MEDIUM_FRACTION
    before = [int(p) for p in metrics.period if p < expert_period] or [expert_period]
    scores = [normalized(r) for r in _returns_of_many(
        task, hidden, [params(p) for p in before], SELECTION_EPISODES, eval_key)]
    medium_period = min(zip(before, scores, strict=True),
                        key=lambda item: (abs(item[1] - goal), item[0]))[0]
    log(f"[{task}] medium: period {medium_period}, normalized "
        f"{scores[before.index(medium_period)]:.1f} over {SELECTION_EPISODES} "
        f"episodes (goal {goal:.1f}; {len(before)} snapshots evaluated)")

    chosen = {"expert": expert_period, "medium": medium_period}
    replay_sets = {"medium-replay": _evenly_spaced(medium_period, MEDIUM_REPLAY_SNAPSHOTS),
                   "full-replay": _evenly_spaced(expert_period, FULL_REPLAY_SNAPSHOTS)}
    for periods in replay_sets.values():
        for p in periods:
            chosen.setdefault(f"period-{p:04d}", p)
    names_by_period = {}
    for name, p in chosen.items():  # medium/expert keep their names when also a replay point
        names_by_period.setdefault(p, name)

    out_dir = policy_dir(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.msgpack"):
        old.unlink()
    entries = {}
    for period, name in sorted(names_by_period.items()):
        data = snapshot_path(run, period, seed).read_bytes()
        write_bytes_atomic(out_dir / f"{name}.msgpack", data)
        if name == "expert":
            rets = expert_returns
        else:
            rets = returns(period, REFERENCE_EPISODES if name == "medium" else SELECTION_EPISODES)
        train_eval = float(metrics.loc[metrics.period == period, "eval_return"].iloc[0])
        entries[name] = {"file": f"{name}.msgpack", "sha256": hashlib.sha256(data).hexdigest(),
                         "period": period, "env_steps": (period + 1) * steps_per_period,
                         "training_eval_return": train_eval,
                         "return_mean": float(rets.mean()), "return_std": float(rets.std()),
                         "episodes": len(rets), "normalized": normalized(float(rets.mean()))}
        log(f"[{task}] {name}: {entries[name]['env_steps']} env steps, return "
            f"{rets.mean():.1f} ± {rets.std():.1f} (normalized {entries[name]['normalized']:.1f})")
    kinds = {kind: [names_by_period[p] for p in periods] for kind, periods in replay_sets.items()}
    info = {
        "task": task, "hidden": list(hidden), "algorithm": settings["algorithm"],
        "reference_scores": {"ref_min": ref_min, "ref_max": ref_max,
                             "episodes": REFERENCE_EPISODES,
                             "ref_min_policy": "uniform random actions",
                             "ref_max_policy": "expert (stochastic, as in the datasets)",
                             "ref_min_std": float(random_returns.std()),
                             "ref_max_std": float(expert_returns.std())},
        "policies": entries, "replay_policies": kinds,
        "training_run": training_record(settings, (last_period + 1) * steps_per_period,
                                        _read_json(run / "run.json"), out_dir / "policies.json"),
        "selected_by": {"command": command or f"offbench policies select {task} --runs "
                        f"{run.parent}", **made},
    }
    write_text_atomic(out_dir / "policies.json", json.dumps(info, indent=2, default=str))
    manifest.cache_clear()
    return info


def training_record(settings: dict, trained_env_steps: int, run_json: dict | None,
                    previous: Path) -> dict:
    """The `training_run` entry of a policies.json: the run's settings, steps and run.json.

    A run stopped short on purpose carries a `stopped_early` note (steps, date, reason, how to
    reproduce it). It is written by hand, since no file of the run records that decision, so it
    is kept from the record at `previous` when that note is about this same run (the same
    run.json, as many trained steps): selecting again from the run keeps it, and a new run
    drops it."""
    out = {"settings": settings, "trained_env_steps": trained_env_steps,
           "target_env_steps": settings["online_config"]["env_steps"], "run_json": run_json}
    old = (_read_json(previous) or {}).get("training_run") or {}
    note = old.get("stopped_early")
    if note and old.get("run_json") == run_json and note.get("env_steps") == trained_env_steps:
        out["stopped_early"] = note
    return out


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def reference_table() -> pd.DataFrame:
    """Reference scores and policy returns of every task that has committed policies."""
    rows = []
    for task in envs.task_names():
        try:
            info = manifest(task)
        except FileNotFoundError:
            continue
        ref = info["reference_scores"]
        for name, entry in info["policies"].items():
            rows.append({"task": task, "policy": name, "env_steps": entry["env_steps"],
                         "return_mean": entry["return_mean"], "return_std": entry["return_std"],
                         "normalized": entry["normalized"], "ref_min": ref["ref_min"],
                         "ref_max": ref["ref_max"]})
    return pd.DataFrame(rows)
