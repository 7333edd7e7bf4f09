"""The fused online training loop: env steps, replay, UTD updates and evaluation in one program.

For one seed, `make_chunk` builds a pure function that runs a number of evaluation periods; each
period is a `lax.scan` over iterations (one step of `num_envs` vectorized envs, then `utd`
algorithm updates on replay minibatches) followed by a deterministic evaluation on separate env
instances. `jit(vmap(chunk))` trains all seeds in one XLA program. The iteration index is passed
unbatched, so the warm-up switch stays a real `lax.cond` under vmap (no wasted updates).

The host driver (`offbench/driver.py`, shared with the offline loop) runs chunks between Orbax
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
import pandas as pd
from flax import struct

import offbench.envs as envs
from offbench import driver, replay, rollout
from offbench.algorithms import EnvSpec, Transition


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    env_steps: int = 1_000_000  # per seed
    num_envs: int = 1  # training envs per seed, stepped together
    warmup_steps: int = 5_000  # uniform random actions, no updates, before learning starts
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
        if self.eval_every % self.num_envs:
            raise ValueError(f"eval_every ({self.eval_every}) must be a multiple of num_envs "
                             f"({self.num_envs})")
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

    def __post_init__(self):
        cfg = self.config
        cfg.validate()
        self.env = envs.make(self.task, cfg.backend, episode_length=cfg.episode_length)
        self.eval_env = envs.make(self.task, cfg.backend, episode_length=cfg.episode_length,
                                  auto_reset=False)
        self.spec = EnvSpec(self.env.observation_size, self.env.action_size)


def init_carry(problem: Problem, key: jax.Array) -> Carry:
    cfg = problem.config
    k_algo, k_env, key = jax.random.split(key, 3)
    algo = problem.algo.init(k_algo, problem.spec, problem.algo_config)
    env_state = jax.vmap(problem.env.reset)(jax.random.split(k_env, cfg.num_envs))
    obs_size, act_size = problem.spec.observation_size, problem.spec.action_size
    example = Transition(obs=jnp.zeros(obs_size), action=jnp.zeros(act_size),
                         reward=jnp.zeros(()), next_obs=jnp.zeros(obs_size),
                         terminal=jnp.zeros(()))
    capacity = cfg.buffer_size or min(cfg.env_steps, 1_000_000)
    zeros = jnp.zeros(cfg.num_envs)
    return Carry(algo=algo, env_state=env_state, buffer=replay.create(example, capacity),
                 key=key, episode_return=zeros, finished_return_sum=jnp.zeros(()),
                 finished_count=jnp.zeros(()))


def evaluate(problem: Problem, algo_state: Any, key: jax.Array) -> jax.Array:
    """Deterministic-policy returns of `eval_episodes` full episodes on separate env instances."""
    def act(obs, _):
        return problem.algo.act(algo_state, obs, key, True)
    return rollout.episode_returns(problem.eval_env, act, key, problem.config.eval_episodes)


def _update_metrics_shape(problem: Problem, carry: Carry) -> dict:
    batch = replay.sample(carry.buffer, carry.key, problem.algo_config.batch_size)
    _, metrics = jax.eval_shape(problem.algo.update, carry.algo, batch, carry.key)
    return metrics


def make_chunk(problem: Problem, periods: int):
    """chunk(carry, first_period) -> (carry, (per-period metrics, per-period snapshots)), for one
    seed; the snapshots are () unless `problem.snapshot` is set."""
    cfg = problem.config
    algo = problem.algo
    iters = cfg.iterations_per_period
    batch_size = problem.algo_config.batch_size

    def iteration(carry: Carry, it: jax.Array):
        key, k_act, k_rand, k_upd = jax.random.split(carry.key, 4)
        env_state = carry.env_state
        learning = it * cfg.num_envs >= cfg.warmup_steps
        policy_action = algo.act(carry.algo, env_state.obs, k_act, False)
        random_action = jax.random.uniform(k_rand, policy_action.shape, minval=-1.0, maxval=1.0)
        action = jnp.where(learning, policy_action, random_action)
        env_action = rollout.to_env_action(problem.env, action)
        next_state = jax.vmap(problem.env.step)(env_state, env_action)
        terminal = next_state.done * (1.0 - next_state.info["truncation"])
        buffer = replay.add(carry.buffer, Transition(
            obs=env_state.obs, action=action, reward=next_state.reward,
            next_obs=next_state.info["final_obs"], terminal=terminal))
        episode_return = carry.episode_return + next_state.reward
        done = next_state.done
        finished_sum = carry.finished_return_sum + jnp.sum(done * episode_return)
        finished_count = carry.finished_count + jnp.sum(done)
        carry = carry.replace(env_state=next_state, buffer=buffer, key=key,
                              episode_return=episode_return * (1.0 - done),
                              finished_return_sum=finished_sum, finished_count=finished_count)

        def learn(algo_state):
            def one_update(state, k):
                k_sample, k_update = jax.random.split(k)
                batch = replay.sample(buffer, k_sample, batch_size)
                return algo.update(state, batch, k_update)
            state, metrics = jax.lax.scan(one_update, algo_state, jax.random.split(k_upd, cfg.utd))
            return state, jax.tree.map(lambda m: m.mean().astype(jnp.float32), metrics)

        def skip(algo_state):
            shapes = _update_metrics_shape(problem, carry)
            return algo_state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32),
                                            shapes)

        algo_state, metrics = jax.lax.cond(learning, learn, skip, carry.algo)
        return carry.replace(algo=algo_state), metrics

    def period(carry: Carry, p: jax.Array):
        its = p * iters + jnp.arange(iters)
        carry = carry.replace(finished_return_sum=jnp.zeros(()), finished_count=jnp.zeros(()))
        carry, metrics = jax.lax.scan(iteration, carry, its)
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

    def chunk(carry: Carry, first_period: jax.Array):
        return jax.lax.scan(period, carry, first_period + jnp.arange(periods))

    return chunk


# --- host driver ------------------------------------------------------------------------------

def train(algo_name: str, task: str, seeds: int, config: OnlineConfig, algo_config: Any,
          out: Path, resume: bool = False, first_seed: int = 0, progress: bool = True,
          stop_after_chunks: int | None = None,
          snapshot: Callable[[Any], Any] | None = None) -> pd.DataFrame:
    """Train `seeds` seeds of an algorithm online on `task`; returns the per-seed metrics table.

    snapshot: algo state -> pytree saved after every evaluation period to
    DIR/snapshots/seed<S>/period_<P>.msgpack (e.g. the actor, for behaviour policies).
    stop_after_chunks: end the process abruptly after that many chunks (resume tests).
    """
    from offbench.algorithms import load_algorithm

    algo = load_algorithm(algo_name)
    if "online" not in algo.MODES:
        raise ValueError(f"algorithm '{algo_name}' does not support online training "
                         f"(its modes: {list(algo.MODES)})")
    out = Path(out)
    config = dataclasses.replace(config, backend=config.backend or envs.default_backend())
    settings = {"algorithm": algo_name, "task": task, "seeds": seeds, "first_seed": first_seed,
                "online_config": dataclasses.asdict(config),
                "algo_config": dataclasses.asdict(algo_config)}
    driver.check_settings(out, settings, resume)  # before building anything
    problem = Problem(algo, algo_config, task, config, snapshot=snapshot)
    writer = (driver.snapshot_writer(out / "snapshots", first_seed, seeds)
              if snapshot is not None else None)
    return driver.run(
        out=out, settings=settings, mode="online", init=lambda k: init_carry(problem, k),
        make_chunk=lambda n: make_chunk(problem, n), seeds=seeds, first_seed=first_seed,
        periods=config.periods, periods_per_chunk=config.periods_per_chunk,
        units_per_period=config.eval_every, unit="env step", resume=resume, progress=progress,
        snapshot_writer=writer, stop_after_chunks=stop_after_chunks)
