"""The fused offline training loop: minibatches sampled on device, updates in a `lax.scan`, a
vectorized deterministic evaluation every `eval_every` updates, all in one program per
evaluation period, `jit(vmap(chunk))` over seeds (sharded across devices when there are several).

The harness owns what papers do to the data before learning, read from the algorithm's config
when it has these fields:

- `normalize_obs` (TD3+BC and others): observations standardized with the dataset's mean/std
  (+1e-3), both in training batches and at evaluation;
- `reward_scale`, `reward_bias`: r' = scale * r + bias (CQL's and Cal-QL's convention);
- `normalize_reward_by_returns` (IQL on locomotion): r' = r * 1000 / (max return - min return)
  over the dataset's whole episodes, those ended by a termination or by the task's time limit
  (`return_range_scale`). Episodes cut short by the end of a collection stream or of the data
  are left out, as CORL's `return_range` leaves out the trailing cut episode (the IQL authors'
  `split_into_trajectories` keeps it): a cut episode's return is not one of the behaviour
  policy's, and our datasets hold one cut episode per collection stream, not one in all.

An algorithm may also define `prepare_dataset(arrays, episode_lengths, config) -> arrays` (e.g.
top-%BC keeps the best episodes) and `DATASET_FIELDS`, the derived fields its batches need
(`next_actions`, `mc_returns`), which arrive in `batch.extra`.

Minibatches are uniform over the transitions (`sampler = "uniform"`, the default), or
trajectory-weighted for any algorithm: `sampler = "return"` / `"advantage"` with
`sampler_temperature` (offbench/loops/sampling.py, Hong et al. 2023). The sampler is part of a
cell's identity only when it is not the default (`OfflineConfig.identity`), so uniform cells
keep their ids.

Divergence: after every update the new state is checked; a seed whose parameters or losses
turn NaN/Inf keeps its last finite state from then on and is flagged `diverged` (with the
update at which it happened); the other seeds are unaffected. Its evaluations are of that last
finite policy, and reports mark the seed. An algorithm that leaves some metrics out on some
updates (SPOT's TD3 losses while its VAE trains) reports them as NaN and says so with
`SKIPS_METRICS = True`; for it a NaN metric means "not computed", and only its parameters
(which a NaN loss turns NaN) and Inf metrics are checked. State fields an algorithm names in
`UNGUARDED_STATE` (MOPO's and MOBILE's append-only model buffer, 1.25M rows by default) are
neither checked nor rolled back: they always take the update's new value, so the guard does not
read and copy them every update (that made MOPO's updates ~7x slower). A non-finite row there
can only matter through what the algorithm learns from it, which is guarded; a diverged seed's
unguarded fields keep changing, which its evaluations (of the guarded policy) do not read.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import struct

import offbench.envs as envs
from offbench.algorithms import (
    EnvSpec,
    Transition,
    config_field,
    contract,
    skips_metrics,
    standardize_observations,
)
from offbench.data import Dataset
from offbench.data import stats as data_stats
from offbench.data.loader import mc_returns
from offbench.loops import driver, rollout, sampling
from offbench.score import normalized_score


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    updates: int = 1_000_000  # per seed
    eval_every: int = 5_000  # updates between evaluations
    eval_episodes: int = 10
    checkpoint_every: int = 50_000  # updates (rounded to whole evaluation periods)
    backend: str | None = None  # physics backend for evaluation; default by device
    episode_length: int | None = None  # evaluation episodes; default: the task's (1000)
    # the final policy's evaluation, apart from the periodic ones: the leaderboard's `last`
    # score (Unifloral's practice; 0: the last periodic evaluation is the last score)
    final_eval_episodes: int = 100
    # minibatch sampling: uniform, or trajectory-weighted (offbench/loops/sampling.py)
    sampler: str = "uniform"  # uniform | return | advantage
    sampler_temperature: float = sampling.DEFAULT_TEMPERATURE  # weighted samplers only

    def validate(self) -> None:
        sampling.check(self.sampler, self.sampler_temperature)
        if self.updates <= 0 or self.eval_every <= 0 or self.eval_episodes <= 0:
            raise ValueError("updates, eval_every and eval_episodes must be positive")
        if self.final_eval_episodes < 0:
            raise ValueError(f"final_eval_episodes must be >= 0, got {self.final_eval_episodes}")
        if self.updates % self.eval_every:
            raise ValueError(f"updates ({self.updates}) must be a multiple of eval_every "
                             f"({self.eval_every})")

    def identity(self) -> dict:
        """The config as cells and run settings record it: without the sampler fields when the
        sampler is uniform (the default), so that cells from before the option keep their ids
        and their runs resume."""
        out = dataclasses.asdict(self)
        if self.sampler == "uniform":
            del out["sampler"], out["sampler_temperature"]
        return out

    @property
    def periods(self) -> int:
        return self.updates // self.eval_every

    @property
    def periods_per_chunk(self) -> int:
        return max(1, self.checkpoint_every // self.eval_every)


class Carry(struct.PyTreeNode):
    algo: Any
    key: jax.Array
    seed_index: jax.Array  # position of this seed in the vmapped batch
    diverged: jax.Array  # bool
    diverged_at: jax.Array  # update at which the seed diverged, -1 if it has not


@dataclasses.dataclass
class Prepared:
    """The dataset as the algorithm learns from it, and the maps that took it there (applied to
    env data too in O2O/hybrid runs): obs' = (obs - obs_mean) / obs_std, r' = scale * r + bias."""

    arrays: dict[str, jax.Array]
    obs_mean: np.ndarray
    obs_std: np.ndarray
    reward_scale: float
    reward_bias: float
    # a trajectory-weighted sampler's tables (sampling.tables), None for uniform sampling
    sampler: dict[str, jax.Array] | None = None


def prepare(algo: types.ModuleType, config: Any, dataset: Dataset, sampler: str = "uniform",
            sampler_temperature: float = sampling.DEFAULT_TEMPERATURE) -> Prepared:
    """The arrays minibatches are drawn from (device), with the observation and reward maps,
    and a weighted sampler's tables, from the episodes the algorithm keeps and the dataset's
    rewards and observations before they are scaled."""
    lengths = np.asarray(dataset.metadata["episode_lengths"])
    arrays = {"obs": np.asarray(dataset.observations), "action": np.asarray(dataset.actions),
              "reward": np.asarray(dataset.rewards, np.float32),
              "next_obs": np.asarray(dataset.next_observations),
              "terminal": np.asarray(dataset.terminals)}
    for name, value in dataset.extra.items():
        arrays[name] = np.asarray(value)
    if contract(algo).prepare_dataset is not None:
        arrays, lengths = algo.prepare_dataset(arrays, lengths, config)
    table = None
    if sampler != "uniform":
        table = {k: jnp.asarray(v) for k, v in sampling.tables(
            sampler, sampler_temperature, arrays["reward"], lengths, arrays["obs"]).items()}
    obs_dim = arrays["obs"].shape[1]
    mean, std = np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32)
    if config_field(config, "normalize_obs"):
        mean, std = standardize_observations(arrays)
    scale = config_field(config, "reward_scale")
    if config_field(config, "normalize_reward_by_returns"):
        scale = scale * return_range_scale(arrays["reward"], arrays["terminal"], lengths,
                                           envs.get_spec(dataset.task).episode_length)
    bias = config_field(config, "reward_bias")
    arrays["reward"] = (arrays["reward"] * scale + bias).astype(np.float32)
    if "mc_returns" in arrays or "mc_returns" in contract(algo).dataset_fields:
        # computed here (load_dataset does not ask the loader for them): Cal-QL's bound must be
        # in the units of the rewards it learns, over the episodes prepare_dataset kept
        arrays["mc_returns"] = mc_returns(arrays["reward"], lengths,
                                          config_field(config, "discount"))
    return Prepared({k: jnp.asarray(v) for k, v in arrays.items()}, mean.astype(np.float32),
                    std.astype(np.float32), float(scale), float(bias), table)


def return_range_scale(rewards: np.ndarray, terminals: np.ndarray, lengths: np.ndarray,
                       time_limit: int) -> float:
    """1000 / (max return - min return) over the whole episodes (ended by a termination or at
    `time_limit` steps); over all episodes only if none is whole (a dataset shorter than one
    episode), where CORL would fail."""
    returns = data_stats.episode_returns(rewards, lengths)
    whole = data_stats.whole_episodes(terminals, lengths, time_limit)
    if whole.any():
        returns = returns[whole]
    return 1000.0 / float(returns.max() - returns.min())


def prepare_arrays(algo: types.ModuleType, config: Any, dataset: Dataset
                   ) -> tuple[dict[str, jax.Array], np.ndarray, np.ndarray]:
    """The arrays minibatches are drawn from (device), and the observation mean/std used."""
    prepared = prepare(algo, config, dataset)
    return prepared.arrays, prepared.obs_mean, prepared.obs_std


BASE_FIELDS = ("obs", "action", "reward", "next_obs", "terminal")


def sample(arrays: dict[str, jax.Array], key: jax.Array, batch_size: int) -> Transition:
    """A minibatch: uniform over the transitions, or by the trajectory weights of the sampler
    tables under arrays[sampling.KEY] when a weighted sampler put them there (`setup`)."""
    if sampling.KEY in arrays:
        index = sampling.indices(arrays[sampling.KEY], key, batch_size)
    else:
        index = jax.random.randint(key, (batch_size,), 0, arrays["reward"].shape[0])
    picked = {k: v[index] for k, v in arrays.items() if k != sampling.KEY}
    return Transition(**{k: picked[k] for k in BASE_FIELDS},
                      extra={k: v for k, v in picked.items() if k not in BASE_FIELDS})


def all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


@dataclasses.dataclass
class Problem:
    """What the compiled loop closes over (the dataset arrays are passed in, not closed over:
    a constant the size of the dataset would bloat the compiled program)."""

    algo: types.ModuleType
    algo_config: Any
    task: str
    config: OfflineConfig
    obs_mean: np.ndarray
    obs_std: np.ndarray
    ref_min: float | None = None
    ref_max: float | None = None
    # (batch, seed_index, update) -> batch, applied to every minibatch: fault injection by
    # tests (a NaN batch for one seed at one update); None in every real run
    fault: Callable[[Transition, jax.Array, jax.Array], Transition] | None = None

    def __post_init__(self):
        self.config.validate()
        self.eval_env = envs.make(self.task, self.config.backend,
                                  episode_length=self.config.episode_length, auto_reset=False)
        self.spec = EnvSpec(self.eval_env.observation_size, self.eval_env.action_size,
                            self.task, self.eval_env.unwrapped.backend)

    def normalized(self, mean_return: jax.Array) -> jax.Array:
        """D4RL's normalized score with the dataset's reference returns (NaN without them)."""
        if self.ref_min is None or self.ref_max is None:
            return jnp.asarray(jnp.nan)
        return normalized_score(mean_return, self.ref_min, self.ref_max)


def init_carry(problem: Problem, key: jax.Array, seed_index: jax.Array,
               dataset: Any = None) -> Carry:
    k_algo, key = jax.random.split(key)
    if isinstance(dataset, dict) and sampling.KEY in dataset:  # the data, not the sampler
        dataset = {k: v for k, v in dataset.items() if k != sampling.KEY}
    algo = problem.algo.init(k_algo, problem.spec, problem.algo_config, dataset)
    return Carry(algo=algo, key=key, seed_index=seed_index, diverged=jnp.asarray(False),
                 diverged_at=jnp.asarray(-1, jnp.int32))


def evaluate(problem: Problem, algo_state: Any, key: jax.Array,
             episodes: int | None = None) -> jax.Array:
    """Returns of `episodes` (default eval_episodes) deterministic-policy episodes, at once;
    through the algorithm's `act_carry` when it has one (a policy with per-episode memory)."""
    mean, std = jnp.asarray(problem.obs_mean), jnp.asarray(problem.obs_std)
    episodes = episodes or problem.config.eval_episodes
    hooks = contract(problem.algo)
    if hooks.act_carry is not None:
        def act_memory(obs, _, memory, reward):
            return hooks.act_carry(algo_state, memory, (obs - mean) / std, reward, key, True)
        return rollout.episode_returns_with_memory(
            problem.eval_env, act_memory, hooks.init_act_carry(algo_state, episodes), key,
            episodes)

    def act(obs, _):
        return problem.algo.act(algo_state, (obs - mean) / std, key, True)
    return rollout.episode_returns(problem.eval_env, act, key, episodes)


FINAL_EVAL_SALT = 0xF1A1  # the final evaluation's key: fold_in(the seed's carry key, salt)


def final_evaluation(problem: Problem, episodes: int, first_seed: int
                     ) -> Callable[[Any], dict[str, dict]] | None:
    """carry (all seeds) -> per seed the final policy's evaluation on `episodes` episodes,
    vectorized, apart from the periodic evaluations: `last_score` (normalized mean return, the
    leaderboard's last score), `last_score_se` (its standard error over the episodes),
    `last_return`, `final_eval_episodes`. None when episodes is 0. Works on any carry with
    `algo` and `key` (the offline and the O2O/hybrid loop's)."""
    if not episodes:
        return None

    def one(carry: Any) -> jax.Array:
        key = jax.random.fold_in(carry.key, FINAL_EVAL_SALT)
        return evaluate(problem, carry.algo, key, episodes)

    run = jax.jit(jax.vmap(one))

    def final(carry: Any) -> dict[str, dict]:
        returns = np.asarray(jax.device_get(run(carry)), np.float64)  # (seeds, episodes)
        per_point = float(problem.normalized(1.0) - problem.normalized(0.0))  # score/return
        out = {}
        for s, r in enumerate(returns):
            se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan")
            out[str(first_seed + s)] = {
                "last_score": float(problem.normalized(r.mean())),
                "last_score_se": se * abs(per_point), "last_return": float(r.mean()),
                "final_eval_episodes": int(len(r))}
        return out
    return final


def computed_metrics(metrics: dict) -> dict:
    """The metrics with "not computed" (NaN) as 0, for the finiteness check of an algorithm
    that skips metrics: an Inf still counts, a NaN does not."""
    return jax.tree.map(lambda m: jnp.where(jnp.isnan(m), 0.0, m), metrics)


def keep_if_finite(carry: Any, new_state: Any, metrics: dict, step: jax.Array,
                   unguarded: tuple[str, ...] = ()) -> tuple[Any, dict]:
    """The carry with `new_state` if it and the metrics are finite and the seed has not diverged
    before; else the last finite state, the seed flagged diverged (at `step`), NaN metrics.
    The state's fields named in `unguarded` (the algorithm's UNGUARDED_STATE) are left out of
    the check and take the new value whatever it holds."""
    if unguarded:
        kept = {name: getattr(new_state, name) for name in unguarded}
        blank = dict.fromkeys(unguarded)
        new_state, old_state = new_state.replace(**blank), carry.algo.replace(**blank)
    else:
        old_state = carry.algo
    ok = all_finite(new_state) & all_finite(metrics) & ~carry.diverged
    state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, old_state)
    if unguarded:
        state = state.replace(**kept)
    diverged = carry.diverged | ~ok
    diverged_at = jnp.where(diverged & (carry.diverged_at < 0), step, carry.diverged_at)
    metrics = jax.tree.map(lambda m: jnp.where(ok, m, jnp.nan).astype(jnp.float32), metrics)
    return carry.replace(algo=state, diverged=diverged, diverged_at=diverged_at), metrics


def make_period(problem: Problem):
    """period(carry, p, arrays) -> (carry, metrics): the p-th evaluation period of one seed
    (`eval_every` guarded updates, then an evaluation). Works on any carry with the fields of
    `Carry` (the O2O loop's carry extends the online one with them)."""
    cfg = problem.config
    algo = problem.algo
    batch_size = problem.algo_config.batch_size
    skips = skips_metrics(algo)
    unguarded = contract(algo).unguarded_state

    def one_update(carry: Carry, step: jax.Array, arrays: dict):
        key, k_sample, k_update = jax.random.split(carry.key, 3)
        batch = sample(arrays, k_sample, batch_size)
        if problem.fault is not None:  # tests: e.g. a NaN batch for one seed at one update
            batch = problem.fault(batch, carry.seed_index, step)
        new_state, metrics = algo.update(carry.algo, batch, k_update)
        checked = computed_metrics(metrics) if skips else metrics
        carry, _ = keep_if_finite(carry, new_state, checked, step, unguarded)
        metrics = jax.tree.map(lambda m: jnp.where(carry.diverged, jnp.nan, m)
                               .astype(jnp.float32), metrics)
        return carry.replace(key=key), metrics

    def period(carry: Carry, p: jax.Array, arrays: dict):
        steps = p * cfg.eval_every + jnp.arange(cfg.eval_every)
        carry, metrics = jax.lax.scan(lambda c, s: one_update(c, s, arrays), carry, steps)
        key, k_eval = jax.random.split(carry.key)
        returns = evaluate(problem, carry.algo, k_eval)
        out = {k: jnp.nanmean(v) for k, v in metrics.items()}
        mean = returns.mean()
        out.update(updates=(p + 1) * cfg.eval_every, eval_return=mean,
                   eval_return_std=returns.std(), normalized_score=problem.normalized(mean),
                   diverged=carry.diverged.astype(jnp.float32),
                   diverged_at=carry.diverged_at.astype(jnp.float32))
        return carry.replace(key=key), out

    return period


def make_chunk(problem: Problem, periods: int):
    """chunk(carry, first_period, arrays) -> (carry, (per-period metrics, ())), for one seed."""
    period = make_period(problem)

    def chunk(carry: Carry, first_period: jax.Array, arrays: dict):
        carry, metrics = jax.lax.scan(lambda c, p: period(c, p, arrays), carry,
                                      first_period + jnp.arange(periods))
        return carry, (metrics, ())

    return chunk


def summarize(table: pd.DataFrame) -> dict:
    """Per seed: last and best normalized score (CORL reports both) and divergence."""
    out = {}
    for seed, rows in table.groupby("seed"):
        rows = rows.sort_values("period")
        out[str(seed)] = {"last_score": float(rows.normalized_score.iloc[-1]),
                          "best_score": float(rows.normalized_score.max()),
                          "last_return": float(rows.eval_return.iloc[-1]),
                          "best_return": float(rows.eval_return.max()),
                          "diverged": bool(rows.diverged.iloc[-1] > 0)}
    return {"per_seed": out}


def load_dataset(algo: Any, algo_config: Any, dataset_id: str,
                 data_root: str | Path | None = None) -> Dataset:
    """A dataset as an algorithm's loop reads it: with the derived fields it declares
    (DATASET_FIELDS) but Monte-Carlo returns, which `prepare` computes from the rewards the
    algorithm learns (every loop loads through here); with `dynamics = "true"` (HARNESS_FIELDS)
    also the physics states, where the dataset carries them (else said once on stderr: the
    oracle then rebuilds its start states from observations)."""
    from offbench.data import load

    fields = tuple(f for f in contract(algo).dataset_fields if f != "mc_returns")
    if config_field(algo_config, "dynamics") == "true":
        fields += ("physics",)
    dataset = load(dataset_id, data_root, derived=fields)
    if "physics" in fields and "physics" not in dataset.extra:
        print(f"note: {dataset_id} has no physics states ({dataset.metadata['physics']}): the "
              "true dynamics start from states rebuilt from its observations (offbench/models/"
              "rollouts.py)", file=sys.stderr)
    return dataset


def setup(algo_name: str, dataset_id: str, config: OfflineConfig, algo_config: Any,
          data_root: str | Path | None = None, dataset: Dataset | None = None
          ) -> tuple[Problem, dict[str, jax.Array]]:
    """The Problem of an offline run and the device arrays its minibatches come from (with a
    weighted sampler's tables under sampling.KEY)."""
    from offbench.algorithms import load_algorithm

    algo = load_algorithm(algo_name)
    if "offline" not in algo.MODES:
        raise ValueError(f"algorithm '{algo_name}' does not support offline training "
                         f"(its modes: {list(algo.MODES)})")
    config = dataclasses.replace(config, backend=envs.resolve_backend(config.backend))
    if dataset is None:
        dataset = load_dataset(algo, algo_config, dataset_id, data_root)
    prepared = prepare(algo, algo_config, dataset, config.sampler, config.sampler_temperature)
    arrays, mean, std = prepared.arrays, prepared.obs_mean, prepared.obs_std
    if prepared.sampler is not None:
        arrays = {**arrays, sampling.KEY: prepared.sampler}
    meta = dataset.metadata
    problem = Problem(algo, algo_config, dataset.task, config, mean, std,
                      meta.get("ref_min"), meta.get("ref_max"))
    return problem, arrays


def train(algo_name: str, dataset_id: str, seeds: int, config: OfflineConfig, algo_config: Any,
          out: Path, resume: bool = False, first_seed: int = 0, progress: bool = True,
          after_chunk: Callable[[int], None] | None = None,
          data_root: str | Path | None = None,
          dataset: Dataset | None = None, on_rows: Any = None,
          seed_group: int | None = None, fault: Callable | None = None,
          on_period: Callable | None = None) -> pd.DataFrame:
    """Train `seeds` seeds of an offline algorithm on a dataset; returns per-seed metrics.
    seed_group: vmapped groups of that many seeds, one after another (driver.map_seeds).
    on_rows, on_period: driver.run's (logging sinks per chunk; progress per evaluation).
    after_chunk, fault: test hooks (driver.run's after_chunk; Problem.fault)."""
    problem, arrays = setup(algo_name, dataset_id, config, algo_config, data_root, dataset)
    problem.fault = fault
    config = problem.config
    settings = {"algorithm": algo_name, "dataset": dataset_id, "seeds": seeds,
                "first_seed": first_seed, "offline_config": config.identity(),
                "algo_config": dataclasses.asdict(algo_config)}
    return driver.run(
        out=Path(out), settings={**settings, "task": problem.task}, mode="offline",
        init=lambda key, index: init_carry(problem, key, index, arrays),
        make_chunk=lambda n: make_chunk(problem, n), seeds=seeds, first_seed=first_seed,
        periods=config.periods, periods_per_chunk=config.periods_per_chunk,
        units_per_period=config.eval_every, unit="update", resume=resume, progress=progress,
        static_args=(arrays,), after_chunk=after_chunk, summarize=summarize,
        on_rows=on_rows, seed_group=seed_group, on_period=on_period,
        final_eval=final_evaluation(problem, config.final_eval_episodes, first_seed))


def restore(out: Path, data_root: str | Path | None = None
            ) -> tuple[Problem, dict[str, jax.Array], Carry, int]:
    """An offline run folder's latest checkpoint (all seeds), with its Problem and arrays:
    (problem, arrays, carry, evaluation periods done). For inspecting trained agents."""
    from offbench.algorithms import config_from_dict, load_algorithm

    out = Path(out)
    settings_path = out / "settings.json"
    if not settings_path.exists():
        raise ValueError(f"{out} is not a run folder (no settings.json); pass the folder of "
                         "an `offbench run` or a store cell")
    settings = json.loads(settings_path.read_text())
    if "offline_config" not in settings:
        raise ValueError(f"{out} is not an offline run (mode: {settings.get('mode', 'online')}"
                         "); only offline runs can be restored here")
    algo = load_algorithm(settings["algorithm"])
    algo_config = config_from_dict(algo.Config, settings["algo_config"])
    config = OfflineConfig(**settings["offline_config"])
    problem, arrays = setup(settings["algorithm"], settings["dataset"], config, algo_config,
                            data_root)
    seeds, first_seed = settings["seeds"], settings["first_seed"]
    carry, done = driver.restore_latest(
        out, lambda key, index: init_carry(problem, key, index, arrays), seeds, first_seed)
    return problem, arrays, carry, done
