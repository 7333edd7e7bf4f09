"""The fused online training loop: env steps, replay, UTD updates and evaluation in one program.

For one seed, `make_chunk` builds a pure function that runs a number of evaluation periods; each
period is a `lax.scan` over iterations (one step of `num_envs` vectorized envs, then `utd`
algorithm updates on replay minibatches) followed by a deterministic evaluation on separate env
instances. `jit(vmap(chunk))` trains all seeds in one XLA program. The iteration index is
passed unbatched, so the warm-up switch stays a real `lax.cond` under vmap (no wasted updates).
`make_period` is also the online phase of the O2O/hybrid loop (offbench/loops/o2o.py), which passes
its own minibatch sampler (dataset + replay), a divergence guard, the dataset's
observation/reward maps and the derived fields to fill.

The host driver (`offbench/loops/driver.py`, shared with the offline loop) runs chunks between Orbax
checkpoints, shows progress, and writes
per-seed metrics (`metrics.csv`) and `run.json` (written at the start, completed with wall and
compile time at the end); `resume=True` restarts from the last
checkpoint and reproduces the uninterrupted run bit for bit (same compiled chunk, same inputs).
"""

from __future__ import annotations

import dataclasses
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
from offbench.algorithms import EnvSpec, Transition, skips_metrics
from offbench.data.loader import ALGORITHM_FIELDS
from offbench.loops import driver, replay, rollout

WARMUP_ACTIONS = ("random", "policy")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    env_steps: int = 1_000_000  # per seed
    num_envs: int = 1  # training envs per seed, stepped together
    warmup_steps: int = 5_000  # no updates before learning starts
    # what acts during warm-up: "random" (uniform actions) or "policy" (the current policy,
    # frozen since nothing updates it: WSRL's warm-up rollouts of the pre-trained policy)
    warmup_actions: str = "random"
    utd: int = 1  # algorithm updates per iteration (per `num_envs` env steps)
    eval_every: int = 5_000  # env steps between evaluations
    eval_episodes: int = 10
    buffer_size: int | None = None  # default: min(env_steps, 1M)
    checkpoint_every: int = 50_000  # env steps (rounded to whole evaluation periods)
    backend: str | None = None  # physics backend; default by device
    episode_length: int | None = None  # default: the task's (1000)

    def validate(self) -> None:
        if self.env_steps <= 0 or self.eval_every <= 0:
            raise ValueError("env_steps and eval_every must be positive")
        if not isinstance(self.eval_episodes, int) or self.eval_episodes <= 0:
            raise ValueError(f"eval_episodes must be a positive integer, got "
                             f"{self.eval_episodes!r}")
        if self.eval_every % self.num_envs:
            raise ValueError(f"eval_every ({self.eval_every}) must be a multiple of num_envs "
                             f"({self.num_envs})")
        if self.warmup_actions not in WARMUP_ACTIONS:
            raise ValueError(f"warmup_actions must be one of {list(WARMUP_ACTIONS)}, "
                             f"got '{self.warmup_actions}'")
        if self.env_steps % self.eval_every:
            raise ValueError(f"env_steps ({self.env_steps}) must be a multiple of eval_every "
                             f"({self.eval_every})")

    @property
    def periods(self) -> int:
        return self.env_steps // self.eval_every

    @property
    def iterations_per_period(self) -> int:
        return self.eval_every // self.num_envs

    @property
    def periods_per_chunk(self) -> int:
        return max(1, self.checkpoint_every // self.eval_every)


class Carry(struct.PyTreeNode):
    algo: Any
    env_state: Any
    buffer: replay.ReplayBuffer
    key: jax.Array
    episode_return: jax.Array  # running return of each training env's current episode
    episode_steps: jax.Array  # length so far of each training env's current episode
    finished_return_sum: jax.Array  # sum / count of training episodes finished this period
    finished_count: jax.Array


@dataclasses.dataclass
class Problem:
    """Everything the compiled loop closes over (static, not part of the carry)."""

    algo: types.ModuleType
    algo_config: Any
    task: str
    config: OnlineConfig
    env: Any = None
    eval_env: Any = None
    spec: EnvSpec | None = None
    # Optional: algo state -> the pytree to keep after every evaluation period (e.g. the actor's
    # parameters, for behaviour-policy snapshots). Returned by the chunk beside the metrics.
    snapshot: Callable[[Any], Any] | None = None
    # What the offline data went through (O2O/hybrid), applied to env data the same way so
    # online and offline transitions share units: observations standardized with the data's
    # mean/std (policy inputs, replay and evaluation), rewards stored as scale * r + bias.
    obs_mean: np.ndarray | None = None
    obs_std: np.ndarray | None = None
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # Derived per-transition fields stored with env transitions (`batch.extra`), filled as the
    # loader fills them for datasets: "mc_returns", "next_actions" (see `ONLINE_EXTRAS`).
    extra_fields: tuple[str, ...] = ()
    discount: float = 0.99  # of mc_returns
    # Dynamics overrides of the TRAINING env only (hybrid sim-to-real tasks: the agent acts in a
    # mismatched simulator, evaluation stays on the real task).
    env_overrides: dict | None = None

    def __post_init__(self):
        cfg = self.config
        cfg.validate()
        self.env = envs.make(self.task, cfg.backend, episode_length=cfg.episode_length,
                             **(self.env_overrides or {}))
        self.eval_env = envs.make(self.task, cfg.backend, episode_length=cfg.episode_length,
                                  auto_reset=False)
        self.spec = EnvSpec(self.env.observation_size, self.env.action_size)
        unknown = sorted(set(self.extra_fields) - set(ONLINE_EXTRAS))
        if unknown:
            raise ValueError(f"the online loop cannot fill the derived fields {unknown} for "
                             f"env transitions; it fills {list(ONLINE_EXTRAS)}")

    def obs_in(self, obs: jax.Array) -> jax.Array:
        """Observations as the algorithm sees them."""
        if self.obs_mean is None:
            return obs
        return (obs - jnp.asarray(self.obs_mean)) / jnp.asarray(self.obs_std)


# the online loop fills every derived field an algorithm may ask for (init_carry's shapes and
# iteration's values name each), so O2O and hybrid runs serve every algorithm
ONLINE_EXTRAS = ALGORITHM_FIELDS
# mc_returns of transitions whose episode has not ended yet: no lower bound (max(Q, -inf) = Q).
MC_PENDING = -jnp.inf


def init_carry(problem: Problem, key: jax.Array, carry_type: type | None = None,
               dataset: Any = None, **fields: Any) -> Carry:
    """The initial carry of one seed; `carry_type` (a subclass of Carry) and `fields` let other
    loops (O2O) extend it, `dataset` is passed on to the algorithm's init."""
    cfg = problem.config
    k_algo, k_env, key = jax.random.split(key, 3)
    algo = problem.algo.init(k_algo, problem.spec, problem.algo_config, dataset)
    env_state = jax.vmap(problem.env.reset)(jax.random.split(k_env, cfg.num_envs))
    obs_size, act_size = problem.spec.observation_size, problem.spec.action_size
    shapes = {"mc_returns": (), "next_actions": (act_size,)}
    example = Transition(obs=jnp.zeros(obs_size), action=jnp.zeros(act_size),
                         reward=jnp.zeros(()), next_obs=jnp.zeros(obs_size),
                         terminal=jnp.zeros(()),
                         extra={k: jnp.zeros(shapes[k]) for k in problem.extra_fields})
    capacity = cfg.buffer_size or min(cfg.env_steps, 1_000_000)
    zeros = jnp.zeros(cfg.num_envs)
    return (carry_type or Carry)(
        algo=algo, env_state=env_state, buffer=replay.create(example, capacity), key=key,
        episode_return=zeros, episode_steps=jnp.zeros(cfg.num_envs, jnp.int32),
        finished_return_sum=jnp.zeros(()), finished_count=jnp.zeros(()), **fields)


def evaluate(problem: Problem, algo_state: Any, key: jax.Array) -> jax.Array:
    """Deterministic-policy returns of `eval_episodes` full episodes on separate env instances."""
    def act(obs, _):
        return problem.algo.act(algo_state, problem.obs_in(obs), key, True)
    return rollout.episode_returns(problem.eval_env, act, key, problem.config.eval_episodes)


def replay_sampler(problem: Problem) -> Callable:
    """sample(carry, key, *static_args) -> batch: uniform minibatches from the replay buffer."""
    def sample(carry: Carry, key: jax.Array, *_):
        return replay.sample(carry.buffer, key, problem.algo_config.batch_size)
    return sample


def fill_next_actions(buffer: replay.ReplayBuffer, action: jax.Array, previous_done: jax.Array,
                      num_envs: int) -> replay.ReplayBuffer:
    """Call before adding this step's transitions: the previous step's transition of each env
    gets this step's action as its next action, unless it ended an episode (then it keeps its
    own action, as the loader does at an episode's end)."""
    slots = (buffer.position - num_envs + jnp.arange(num_envs)) % buffer.capacity
    old = buffer.data.extra["next_actions"]
    keep = (previous_done > 0) | (buffer.size == 0)
    new = old.at[slots].set(jnp.where(keep[:, None], old[slots], action))
    return buffer.replace(data=buffer.data.replace(extra={**buffer.data.extra,
                                                          "next_actions": new}))


def fill_mc_returns(buffer: replay.ReplayBuffer, done: jax.Array, episode_steps: jax.Array,
                    discount: float, window: int) -> replay.ReplayBuffer:
    """Call after adding this step's transitions: for each env whose episode just ended, write
    the discounted return-to-go of every transition of that episode (the last `window` of them
    at most). The backward recursion G_k = r_k + discount * G_(k+1) runs as an associative scan
    over the env's newest transitions (newest first), one vectorized pass, no host loop."""
    n = done.shape[0]
    cap = buffer.capacity
    ages = jnp.arange(window)  # 0: this step's transition
    slots = (buffer.position - n + jnp.arange(n)[:, None] - n * ages[None, :]) % cap  # (n, W)
    rewards = buffer.data.reward[slots]
    gammas = jnp.where(ages == 0, 0.0, discount) * jnp.ones_like(rewards)

    def compose(first, second):  # x -> a2 * (a1 * x + b1) + b2
        (a1, b1), (a2, b2) = first, second
        return a1 * a2, a2 * b1 + b2

    _, returns = jax.lax.associative_scan(compose, (gammas, rewards), axis=1)
    write = (done[:, None] > 0) & (ages[None, :] < episode_steps[:, None])
    old = buffer.data.extra["mc_returns"]
    new = old.at[slots].set(jnp.where(write, returns, old[slots]))
    return buffer.replace(data=buffer.data.replace(extra={**buffer.data.extra,
                                                          "mc_returns": new}))


def make_period(problem: Problem, sample: Callable | None = None,
                guard: Callable | None = None):
    """period(carry, p, *static_args) -> (carry, (metrics, snapshot)): the p-th evaluation
    period of one seed (p counts online periods from 0). `sample(carry, key, *static_args)`
    draws each update's minibatch (default: the replay buffer; O2O/hybrid mix in offline
    data). `guard(carry, new_algo_state, metrics, iteration) -> (carry, metrics)` decides what
    to keep after each iteration's updates (O2O: freeze a diverged seed); default: keep all."""
    cfg = problem.config
    algo = problem.algo
    iters = cfg.iterations_per_period
    sample = sample or replay_sampler(problem)
    extras = problem.extra_fields
    reduce = jnp.nanmean if skips_metrics(algo) else jnp.mean

    def iteration(carry: Carry, it: jax.Array, static: tuple):
        key, k_act, k_rand, k_upd = jax.random.split(carry.key, 4)
        env_state = carry.env_state
        learning = it * cfg.num_envs >= cfg.warmup_steps
        obs = problem.obs_in(env_state.obs)
        policy_action = algo.act(carry.algo, obs, k_act, False)
        random_action = jax.random.uniform(k_rand, policy_action.shape, minval=-1.0, maxval=1.0)
        if cfg.warmup_actions == "policy":
            action = policy_action
        else:
            action = jnp.where(learning, policy_action, random_action)
        env_action = rollout.to_env_action(problem.env, action)
        next_state = jax.vmap(problem.env.step)(env_state, env_action)
        terminal = next_state.done * (1.0 - next_state.info["truncation"])
        buffer = carry.buffer
        if "next_actions" in extras:
            buffer = fill_next_actions(buffer, action, env_state.done, cfg.num_envs)
        extra = {"mc_returns": jnp.full(cfg.num_envs, MC_PENDING), "next_actions": action}
        buffer = replay.add(buffer, Transition(
            obs=obs, action=action,
            reward=next_state.reward * problem.reward_scale + problem.reward_bias,
            next_obs=problem.obs_in(next_state.info["final_obs"]), terminal=terminal,
            extra={k: extra[k] for k in extras}))
        done = next_state.done
        episode_steps = carry.episode_steps + 1
        if "mc_returns" in extras:
            # at most the buffer's share per env: an episode longer than that has lost its
            # oldest transitions (and the window must not wrap onto itself)
            window = min(problem.env.episode_length, buffer.capacity // cfg.num_envs)
            buffer = fill_mc_returns(buffer, done, episode_steps, problem.discount, window)
        episode_return = carry.episode_return + next_state.reward
        finished_sum = carry.finished_return_sum + jnp.sum(done * episode_return)
        finished_count = carry.finished_count + jnp.sum(done)
        carry = carry.replace(env_state=next_state, buffer=buffer, key=key,
                              episode_return=episode_return * (1.0 - done),
                              episode_steps=jnp.where(done > 0, 0, episode_steps),
                              finished_return_sum=finished_sum, finished_count=finished_count)

        def learn(algo_state):
            def one_update(state, k):
                k_sample, k_update = jax.random.split(k)
                batch = sample(carry, k_sample, *static)
                return algo.update(state, batch, k_update)
            state, metrics = jax.lax.scan(one_update, algo_state, jax.random.split(k_upd, cfg.utd))
            # nanmean where an algorithm reports a loss only on some of its UTD updates (RLPD);
            # else a NaN on any of them stays NaN, for the divergence guard
            return state, jax.tree.map(lambda m: reduce(m).astype(jnp.float32), metrics)

        def skip(algo_state):
            batch = sample(carry, carry.key, *static)
            _, shapes = jax.eval_shape(algo.update, carry.algo, batch, carry.key)
            return algo_state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32),
                                            shapes)

        algo_state, metrics = jax.lax.cond(learning, learn, skip, carry.algo)
        if guard is not None:
            return guard(carry, algo_state, metrics, it)
        return carry.replace(algo=algo_state), metrics

    def period(carry: Carry, p: jax.Array, *static):
        its = p * iters + jnp.arange(iters)
        carry = carry.replace(finished_return_sum=jnp.zeros(()), finished_count=jnp.zeros(()))
        carry, metrics = jax.lax.scan(lambda c, i: iteration(c, i, static), carry, its)
        key, k_eval = jax.random.split(carry.key)
        returns = evaluate(problem, carry.algo, k_eval)
        out = {k: jnp.nanmean(v) for k, v in metrics.items()}
        out.update(env_steps=(p + 1) * iters * cfg.num_envs, eval_return=returns.mean(),
                   eval_return_std=returns.std(),
                   train_return=jnp.where(carry.finished_count > 0,
                                          carry.finished_return_sum
                                          / jnp.maximum(carry.finished_count, 1), jnp.nan))
        snap = problem.snapshot(carry.algo) if problem.snapshot is not None else ()
        return carry.replace(key=key), (out, snap)

    return period


def make_chunk(problem: Problem, periods: int):
    """chunk(carry, first_period) -> (carry, (per-period metrics, per-period snapshots)), for one
    seed; the snapshots are () unless `problem.snapshot` is set."""
    period = make_period(problem)

    def chunk(carry: Carry, first_period: jax.Array):
        return jax.lax.scan(period, carry, first_period + jnp.arange(periods))

    return chunk


# --- host driver ------------------------------------------------------------------------------

def train(algo_name: str, task: str, seeds: int, config: OnlineConfig, algo_config: Any,
          out: Path, resume: bool = False, first_seed: int = 0, progress: bool = True,
          after_chunk: Callable[[int], None] | None = None,
          snapshot: Callable[[Any], Any] | None = None,
          seed_group: int | None = None) -> pd.DataFrame:
    """Train `seeds` seeds of an algorithm online on `task`; returns the per-seed metrics table.

    snapshot: algo state -> pytree saved after every evaluation period to
    DIR/snapshots/seed<S>/period_<P>.msgpack (e.g. the actor, for behaviour policies).
    after_chunk: called after each chunk is saved (driver.run; resume tests).
    seed_group: vmapped groups of that many seeds, one after another (driver.map_seeds).
    """
    from offbench.algorithms import load_algorithm

    algo = load_algorithm(algo_name)
    if "online" not in algo.MODES:
        raise ValueError(f"algorithm '{algo_name}' does not support online training "
                         f"(its modes: {list(algo.MODES)})")
    out = Path(out)
    config = dataclasses.replace(config, backend=envs.resolve_backend(config.backend))
    settings = {"algorithm": algo_name, "task": task, "seeds": seeds, "first_seed": first_seed,
                "online_config": dataclasses.asdict(config),
                "algo_config": dataclasses.asdict(algo_config)}
    driver.check_settings(out, settings, resume)  # before building anything
    problem = Problem(algo, algo_config, task, config, snapshot=snapshot)
    writer = (driver.snapshot_writer(out / "snapshots", first_seed, seeds)
              if snapshot is not None else None)
    return driver.run(
        out=out, settings=settings, mode="online", init=lambda k, _: init_carry(problem, k),
        make_chunk=lambda n: make_chunk(problem, n), seeds=seeds, first_seed=first_seed,
        periods=config.periods, periods_per_chunk=config.periods_per_chunk,
        units_per_period=config.eval_every, unit="env step", resume=resume, progress=progress,
        snapshot_writer=writer, after_chunk=after_chunk, seed_group=seed_group)
