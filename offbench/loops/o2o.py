"""Offline-to-online (O2O) and hybrid training: one program, one state, seeds vmapped.

- `o2o`: `offline_updates` updates on the dataset (offline.py's guarded update and evaluation),
  then `online_steps` env steps of fine-tuning (online.py's iteration: env step, replay, UTD
  updates) continuing from the same algorithm state;
- `hybrid`: online RL from scratch (no pre-training) with the dataset at hand.

In the online phase every minibatch holds round(offline_ratio * batch_size) transitions drawn
uniformly from the dataset and the rest from the replay buffer of env transitions ("symmetric
sampling" at ratio 0.5, RLPD's default; any ratio in [0, 1]; 0 drops the data). Env
transitions go through the maps the dataset went through (observation standardization, reward
scale/bias), and get the derived fields the algorithm asks for (`mc_returns` when their
episode ends, `next_actions`), so both halves of a batch share units and fields.

The online phase starts with `warmup_steps` env steps without updates, acted by uniform random
actions or, with `warmup_actions="policy"`, by the (thereby frozen) pre-trained policy (WSRL);
both default to the algorithm config's fields of those names. An algorithm's `online_update`, if
it has one, replaces `update` online. Hybrid sim-to-real tasks (`DATASET@sim:gravity=0.5`,
offbench/hybrid.py) train in a simulator with those dynamics overrides and evaluate on the real
task; `BATCH_FIELDS = ("from_dataset",)` marks each minibatch row's source (H2O).

Evaluation periods are numbered through both phases: periods [0, P_off) are offline (each
`eval_every` updates), [P_off, P_off + P_on) online (each `eval_every` env steps). A chunk is a
scan over periods whose body picks the phase with `lax.cond` on the (unbatched) period index,
so one compiled chunk serves both phases, a chunk may straddle the switch, and the driver's
checkpoints and resume work anywhere, also in the middle of the online phase. Rows of
metrics.csv carry `phase`, `updates` (all updates so far) and `env_steps` (online env steps).

Divergence: as in offline.py, a seed whose parameters turn NaN/Inf (or losses Inf) keeps its last
finite state from then on and is flagged `diverged`, in both phases (online: checked after each
iteration's `utd` updates); the flag and `diverged_at` (in updates) carry over the switch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import pandas as pd

import offbench.envs as envs
from offbench import metrics
from offbench.algorithms import Transition, config_field, contract, skips_metrics
from offbench.data import Dataset
from offbench.loops import driver, offline, online, replay

MIXED_MODES = ("o2o", "hybrid")


@dataclasses.dataclass(frozen=True)
class MixedConfig:
    mode: str = "o2o"  # "o2o" or "hybrid"
    offline_updates: int = 1_000_000  # o2o: pre-training updates per seed; hybrid: 0
    online_steps: int = 1_000_000  # env steps per seed
    # fraction of each online minibatch drawn from the dataset; None: the algorithm config's
    # `offline_ratio` if it has one (Cal-QL's mixing ratio, RLPD's), else 0.5
    offline_ratio: float | None = None
    eval_every: int = 5_000  # updates (offline phase) / env steps (online phase)
    eval_episodes: int = 10
    checkpoint_every: int = 50_000  # in the same units, rounded to whole periods
    num_envs: int = 1
    utd: int | None = None  # None: the algorithm config's `utd` if it has one, else 1
    # online env steps with no updates first; None: the algorithm config's `warmup_steps` if
    # it has one (WSRL's 5000), else 0
    warmup_steps: int | None = None
    # who acts in them: "random" or "policy" (the frozen pre-trained policy, WSRL); None: the
    # algorithm config's `warmup_actions` if it has one, else "random"
    warmup_actions: str | None = None
    buffer_size: int | None = None  # default: min(online_steps, 1M)
    backend: str | None = None
    episode_length: int | None = None
    threshold: float | None = None  # hybrid: run.json reports the env steps to reach it
    # the final policy's evaluation on the real task (offline.final_evaluation): the
    # leaderboard's `last` score; 0: the last periodic evaluation is
    final_eval_episodes: int = 100

    def validate(self) -> None:
        if self.mode not in MIXED_MODES:
            raise ValueError(f"mode must be one of {list(MIXED_MODES)}, got '{self.mode}'")
        if self.mode == "o2o" and self.offline_updates <= 0:
            raise ValueError("o2o mode needs --offline-updates > 0 (pre-training)")
        if self.mode == "hybrid" and self.offline_updates != 0:
            raise ValueError("hybrid mode trains from scratch: --offline-updates must be 0 "
                             "(use --mode o2o to pre-train)")
        if self.online_steps <= 0 or self.eval_every <= 0 or self.eval_episodes <= 0:
            raise ValueError("online_steps, eval_every and eval_episodes must be positive")
        for name in ("offline_updates", "online_steps"):
            if getattr(self, name) % self.eval_every:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of "
                                 f"eval_every ({self.eval_every})")
        ratio = self.offline_ratio
        if ratio is not None and not (0.0 <= ratio <= 1.0):  # also refuses NaN
            raise ValueError(f"offline ratio must be in [0, 1], got {ratio}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_actions not in (None, *online.WARMUP_ACTIONS):
            raise ValueError(f"warmup_actions must be one of {list(online.WARMUP_ACTIONS)}, "
                             f"got '{self.warmup_actions}'")
        if self.utd is not None and self.utd < 1:
            raise ValueError(f"utd must be >= 1, got {self.utd}")
        if self.final_eval_episodes < 0:
            raise ValueError(f"final_eval_episodes must be >= 0, got {self.final_eval_episodes}")

    @property
    def offline_periods(self) -> int:
        return self.offline_updates // self.eval_every

    @property
    def online_periods(self) -> int:
        return self.online_steps // self.eval_every

    @property
    def warmup_iterations(self) -> int:
        """Online loop iterations (num_envs env steps each) of warm-up, without updates."""
        return math.ceil((self.warmup_steps or 0) / self.num_envs)

    @property
    def online_updates(self) -> int:
        """Gradient updates of the whole online phase: utd per iteration after the warm-up."""
        iterations = self.online_periods * (self.eval_every // self.num_envs)
        return max(0, iterations - self.warmup_iterations) * (self.utd or 1)

    def online_config(self) -> online.OnlineConfig:
        return online.OnlineConfig(
            env_steps=self.online_steps, num_envs=self.num_envs,
            warmup_steps=self.warmup_steps or 0, warmup_actions=self.warmup_actions or "random",
            utd=self.utd or 1, eval_every=self.eval_every, eval_episodes=self.eval_episodes,
            buffer_size=self.buffer_size, checkpoint_every=self.checkpoint_every,
            backend=self.backend, episode_length=self.episode_length)

    def offline_config(self) -> offline.OfflineConfig:
        # a hybrid run has no offline phase; the problem is still built for its normalization
        return offline.OfflineConfig(
            updates=max(self.offline_updates, self.eval_every), eval_every=self.eval_every,
            eval_episodes=self.eval_episodes, checkpoint_every=self.checkpoint_every,
            backend=self.backend, episode_length=self.episode_length)


def resolve(config: MixedConfig, algo_config: Any) -> MixedConfig:
    """Fill the fields left to the algorithm (offline ratio, UTD, warm-up) and validate."""
    ratio = config.offline_ratio
    if ratio is None:
        ratio = config_field(algo_config, "offline_ratio")
    utd = config.utd if config.utd is not None else config_field(algo_config, "utd")
    warmup = config.warmup_steps
    if warmup is None:
        warmup = config_field(algo_config, "warmup_steps")
    actions = config.warmup_actions or config_field(algo_config, "warmup_actions")
    config = dataclasses.replace(config, offline_ratio=float(ratio), utd=int(utd),
                                 warmup_steps=int(warmup), warmup_actions=actions)
    config.validate()
    return config


def check_mode(algo: types.ModuleType, name: str, mode: str) -> None:
    if mode not in algo.MODES:
        raise ValueError(f"algorithm '{name}' does not support mode '{mode}' "
                         f"(its modes: {list(algo.MODES)})")


def offline_count(batch_size: int, ratio: float) -> int:
    """Dataset transitions per minibatch: round(ratio * batch_size), the rest from replay."""
    return int(round(ratio * batch_size))


def mixed_sample(arrays: dict[str, jax.Array], buffer: replay.ReplayBuffer, key: jax.Array,
                 batch_size: int, n_offline: int, mark_source: bool = False) -> Transition:
    """A minibatch of `n_offline` dataset transitions followed by batch_size - n_offline replay
    transitions, each part uniform with replacement (the counts are static: exact per batch).
    mark_source: also `extra["from_dataset"]`, 1 on dataset rows and 0 on env rows (H2O)."""
    k_offline, k_online = jax.random.split(key)
    data = offline.sample(arrays, k_offline, n_offline)
    env = replay.sample(buffer, k_online, batch_size - n_offline)
    batch = jax.tree.map(lambda a, b: jnp.concatenate([a.astype(b.dtype), b]), data, env)
    return with_source_marks(batch, n_offline) if mark_source else batch


def with_source_marks(batch: Transition, n_offline: int) -> Transition:
    """`extra["from_dataset"]`: 1 on the first n_offline rows (the dataset's), 0 on the rest."""
    source = (jnp.arange(batch.reward.shape[0]) < n_offline).astype(jnp.float32)
    return batch.replace(extra={**batch.extra, "from_dataset": source})


def online_view(algo: types.ModuleType, config: MixedConfig | None = None) -> Any:
    """The algorithm as the online phase runs it (its Contract): its `online_update` in place
    of `update` when it defines one (an algorithm whose fine-tuning differs from its
    pre-training: WSRL, SPOT's lambda schedule, ReBRAC's decaying penalties); else the module
    itself. An
    `online_update` with `online_start`/`online_updates` parameters is told where fine-tuning
    starts (the offline updates) and how many updates it has (MixedConfig.online_updates)."""
    if contract(algo).online_update is None:
        return algo
    update = algo.online_update
    if config is not None and "online_start" in inspect.signature(update).parameters:
        update = functools.partial(update, online_start=config.offline_updates,
                                   online_updates=max(1, config.online_updates))
    return dataclasses.replace(contract(algo), update=update)


def fine_tuning_config(algo: types.ModuleType, algo_config: Any, mode: str,
                       given: set[str] | frozenset[str] = frozenset()) -> Any:
    """An O2O run's algorithm config: the algorithm's published fine-tuning settings
    (`O2O_SETTINGS`, e.g. IQL's constant actor learning rate) over its offline ones, except
    the keys the user set (`given`). Other modes: unchanged."""
    if mode != "o2o":
        return algo_config
    changes = {k: v for k, v in contract(algo).o2o_settings.items() if k not in given}
    return dataclasses.replace(algo_config, **changes)


class Carry(online.Carry):
    """The online loop's carry plus the offline loop's divergence bookkeeping."""

    seed_index: jax.Array
    diverged: jax.Array
    diverged_at: jax.Array


@dataclasses.dataclass
class Problem:
    """What the compiled O2O/hybrid chunk closes over: the offline loop's problem (dataset
    normalization, evaluation, normalized score) and the online loop's (envs, the dataset's
    maps applied to env data, the derived fields to fill), built from one MixedConfig."""

    algo: types.ModuleType
    algo_config: Any
    task: str
    config: MixedConfig
    prepared: offline.Prepared
    ref_min: float | None = None
    ref_max: float | None = None
    # hybrid sim-to-real tasks (offbench/hybrid.py): dynamics overrides of the env the agent
    # trains in; evaluation stays on the real task
    sim_overrides: dict | None = None

    def __post_init__(self):
        cfg, prep = self.config, self.prepared
        self.offline = offline.Problem(self.algo, self.algo_config, self.task,
                                       cfg.offline_config(), prep.obs_mean, prep.obs_std,
                                       self.ref_min, self.ref_max)
        fields = tuple(k for k in prep.arrays if k not in offline.BASE_FIELDS)
        self.online = online.Problem(
            online_view(self.algo, cfg), self.algo_config, self.task, cfg.online_config(),
            obs_mean=prep.obs_mean, obs_std=prep.obs_std, reward_scale=prep.reward_scale,
            reward_bias=prep.reward_bias, extra_fields=fields,
            discount=config_field(self.algo_config, "discount"),
            env_overrides=self.sim_overrides)
        self.mark_source = "from_dataset" in contract(self.algo).batch_fields
        self.n_offline = offline_count(self.algo_config.batch_size, cfg.offline_ratio)

    def phase(self, period: int) -> dict:
        return {"phase": "offline" if period < self.config.offline_periods else "online"}


def init_carry(problem: Problem, key: jax.Array, seed_index: jax.Array, arrays: dict) -> Carry:
    return online.init_carry(problem.online, key, carry_type=Carry, dataset=arrays,
                             seed_index=seed_index, diverged=jnp.asarray(False),
                             diverged_at=jnp.asarray(-1, jnp.int32))


def make_chunk(problem: Problem, periods: int):
    """chunk(carry, first_period, arrays) -> (carry, (metrics, ())) for one seed; periods are
    numbered through both phases."""
    cfg = problem.config
    p_off = cfg.offline_periods
    batch_size = problem.algo_config.batch_size
    offline_period = offline.make_period(problem.offline)

    def sample(carry: Carry, key: jax.Array, arrays: dict) -> Transition:
        return mixed_sample(arrays, carry.buffer, key, batch_size, problem.n_offline,
                            problem.mark_source)

    iters = problem.online.config.iterations_per_period
    warmup_iters = cfg.warmup_iterations
    skips = skips_metrics(problem.offline.algo)

    def guard(carry: Carry, new_state: Any, out: dict, it: jax.Array):
        # diverged_at counts updates through both phases (this iteration's first update)
        step = cfg.offline_updates + jnp.maximum(0, it - warmup_iters) * cfg.utd
        # every metric is NaN ("not computed") before the warm-up ends, where no update runs
        checked = (offline.computed_metrics(out) if skips else
                   jax.tree.map(lambda m: jnp.where(it < warmup_iters, 0.0, m), out))
        carry, _ = offline.keep_if_finite(carry, new_state, checked, step)
        return carry, jax.tree.map(lambda m: jnp.where(carry.diverged, jnp.nan, m), out)

    online_period = online.make_period(problem.online, sample, guard)

    def offline_branch(carry: Carry, p: jax.Array, arrays: dict):
        carry, out = offline_period(carry, p, arrays)
        return carry, {**out, "env_steps": jnp.zeros((), jnp.int32)}

    def online_branch(carry: Carry, p: jax.Array, arrays: dict):
        q = p - p_off
        carry, (out, _) = online_period(carry, q, arrays)
        learned = jnp.maximum(0, (q + 1) * iters - warmup_iters) * cfg.utd
        out.update(updates=cfg.offline_updates + learned,
                   normalized_score=problem.offline.normalized(out["eval_return"]),
                   diverged=carry.diverged.astype(jnp.float32),
                   diverged_at=carry.diverged_at.astype(jnp.float32))
        return carry, out

    def period(carry: Carry, p: jax.Array, arrays: dict):
        branches = [b for b, n in ((offline_branch, p_off), (online_branch, cfg.online_periods))
                    if n > 0]
        shapes = [jax.eval_shape(b, carry, p, arrays)[1] for b in branches]
        keys = sorted(set().union(*shapes))

        def padded(branch):
            def run(c):
                c, out = branch(c, p, arrays)
                nan = jnp.asarray(jnp.nan, jnp.float32)
                return c, {k: jnp.asarray(out.get(k, nan)).astype(jnp.float32) for k in keys}
            return run

        if len(branches) == 1:
            return padded(branches[0])(carry)
        return jax.lax.cond(p < p_off, padded(offline_branch), padded(online_branch), carry)

    def chunk(carry: Carry, first_period: jax.Array, arrays: dict):
        carry, out = jax.lax.scan(lambda c, p: period(c, p, arrays), carry,
                                  first_period + jnp.arange(periods))
        return carry, (out, ())

    return chunk


def summarize(table: pd.DataFrame, config: MixedConfig) -> dict:
    """Per seed: O2O metrics (o2o) or steps to the threshold (hybrid), last and best scores."""
    out = {}
    for seed, rows in table.groupby("seed"):
        rows = rows.sort_values("period")
        on = rows[rows.phase == "online"]
        # best_score: the best online evaluation (what fine-tuning reached; the leaderboard's
        # "best" column), final_score: the last one
        entry = {"last_score": float(rows.normalized_score.iloc[-1]),
                 "best_score": float(on.normalized_score.max()),
                 "final_score": float(on.normalized_score.iloc[-1]),
                 "diverged": bool(rows.diverged.iloc[-1] > 0)}
        if config.mode == "o2o":
            pre = rows[rows.phase == "offline"].normalized_score
            entry.update(metrics.o2o_summary(pre, on.env_steps, on.normalized_score,
                                             config.online_steps))
        if config.threshold is not None:
            entry["steps_to_threshold"] = metrics.steps_to_threshold(
                on.env_steps, on.normalized_score, config.threshold)
        out[str(seed)] = entry
    return {"per_seed": out}


def describe(config: MixedConfig, period: int) -> str:
    """Where a run is after evaluation period `period`, for progress: "offline updates
    2000/10000" in the pre-training phase, "online env steps 500/5000" after it (hybrid runs,
    which have no offline phase: "env steps 500/5000")."""
    if period < config.offline_periods:
        return f"offline updates {(period + 1) * config.eval_every}/{config.offline_updates}"
    steps = (period + 1 - config.offline_periods) * config.eval_every
    phase = "online " if config.offline_periods else ""
    return f"{phase}env steps {steps}/{config.online_steps}"


def train(algo_name: str, dataset_id: str, seeds: int, config: MixedConfig, algo_config: Any,
          out: Path, resume: bool = False, first_seed: int = 0, progress: bool = True,
          after_chunk: Callable[[int], None] | None = None,
          data_root: str | Path | None = None,
          dataset: Dataset | None = None,
          on_rows: Callable[[list[dict]], None] | None = None,
          seed_group: int | None = None,
          on_period: Callable | None = None) -> pd.DataFrame:
    """Train `seeds` seeds in O2O or hybrid mode on a dataset's task; per-seed metrics.
    `dataset_id` may be a hybrid sim-to-real name (`halfcheetah-medium@sim:gravity=0.5`,
    offbench/hybrid.py): the data and evaluation are the real task's, the online env the
    simulator's. on_rows: called with each chunk's new metric rows (logging sinks); on_period:
    after every evaluation period (driver.run; progress). seed_group: vmapped groups of that
    many seeds, one after another (driver.map_seeds)."""
    from offbench import hybrid
    from offbench.algorithms import load_algorithm

    data_id, sim = hybrid.split(dataset_id)

    algo = load_algorithm(algo_name)
    config.validate()
    check_mode(algo, algo_name, config.mode)
    config = resolve(config, algo_config)
    config = dataclasses.replace(config, backend=envs.resolve_backend(config.backend))
    out = Path(out)
    settings = {"algorithm": algo_name, "dataset": dataset_id, "seeds": seeds,
                "first_seed": first_seed, "sim_overrides": sim,
                "mixed_config": dataclasses.asdict(config),
                "algo_config": dataclasses.asdict(algo_config)}
    if dataset is None:
        dataset = offline.load_dataset(algo, algo_config, data_id, data_root)
    prepared = offline.prepare(algo, algo_config, dataset)
    meta = dataset.metadata
    problem = Problem(algo, algo_config, dataset.task, config, prepared, meta.get("ref_min"),
                      meta.get("ref_max"), sim_overrides=sim)
    arrays = prepared.arrays
    periods = config.offline_periods + config.online_periods
    return driver.run(
        out=out, settings={**settings, "task": dataset.task}, mode=config.mode,
        init=lambda key, index: init_carry(problem, key, index, arrays),
        make_chunk=lambda n: make_chunk(problem, n), seeds=seeds, first_seed=first_seed,
        periods=periods, periods_per_chunk=max(1, config.checkpoint_every // config.eval_every),
        units_per_period=config.eval_every, unit="step", resume=resume, progress=progress,
        static_args=(arrays,), after_chunk=after_chunk,
        summarize=lambda table: summarize(table, config), annotate=problem.phase,
        on_rows=on_rows, seed_group=seed_group, on_period=on_period,
        describe=lambda p: describe(config, p),
        final_eval=offline.final_evaluation(problem.offline, config.final_eval_episodes,
                                            first_seed))
