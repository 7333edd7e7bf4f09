"""The fused online training loop: env steps, replay, UTD updates and evaluation in one program.

For one seed, `make_chunk` builds a pure function that runs a number of evaluation periods; each
period is a `lax.scan` over iterations (one step of `num_envs` vectorized envs, then `utd`
algorithm updates on replay minibatches) followed by a deterministic evaluation on separate env
instances. `jit(vmap(chunk))` trains all seeds in one XLA program. The iteration index is passed
unbatched, so the warm-up switch stays a real `lax.cond` under vmap (no wasted updates).

The host driver `train` runs chunks between Orbax checkpoints, shows progress, and writes
per-seed metrics (`metrics.csv`) and `run.json` (written at the start, completed with wall and
compile time at the end); `resume=True` restarts from the last
checkpoint and reproduces the uninterrupted run bit for bit (same compiled chunk, same inputs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
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
from offbench import replay, rollout
from offbench.algorithms import EnvSpec, Transition
from offbench.io import write_bytes_atomic, write_text_atomic
from offbench.provenance import record


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

def _checkpointer(directory: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(directory.resolve(), options=options)


def train(algo_name: str, task: str, seeds: int, config: OnlineConfig, algo_config: Any,
          out: Path, resume: bool = False, first_seed: int = 0, progress: bool = True,
          stop_after_chunks: int | None = None,
          snapshot: Callable[[Any], Any] | None = None) -> pd.DataFrame:
    """Train `seeds` seeds of an algorithm online on `task`; returns the per-seed metrics table.

    snapshot: algo state -> pytree saved after every evaluation period to
    DIR/snapshots/seed<S>/period_<P>.msgpack (e.g. the actor, for behaviour policies).

    stop_after_chunks: end the process abruptly (os._exit) after that many chunks and their
    checkpoint, to test resume-after-kill.
    """
    import orbax.checkpoint as ocp

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
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from disk
    settings_path = out / "settings.json"
    if resume and settings_path.exists():
        saved = json.loads(settings_path.read_text())
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"--resume with settings that differ from the run in {out}: "
                             f"{', '.join(changed)}; resume with the original settings")
    problem = Problem(algo, algo_config, task, config, snapshot=snapshot)
    keys = jnp.stack([jax.random.PRNGKey(first_seed + s) for s in range(seeds)])
    init_fn = jax.jit(jax.vmap(lambda k: init_carry(problem, k)))
    manager = _checkpointer(out / "checkpoints")
    metrics_path = out / "metrics.csv"
    rows: list[dict] = []
    done_periods = 0
    if resume and manager.latest_step() is not None:
        done_periods = manager.latest_step()
        abstract = jax.eval_shape(init_fn, keys)
        carry = manager.restore(done_periods, args=ocp.args.StandardRestore(abstract))
        if metrics_path.exists():
            rows = pd.read_csv(metrics_path).query("period < @done_periods").to_dict("records")
    else:
        if (metrics_path.exists() or manager.latest_step() is not None) and not resume:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or "
                             "choose another --out")
        carry = init_fn(keys)
    out.mkdir(parents=True, exist_ok=True)
    if not settings_path.exists():
        write_text_atomic(settings_path, json.dumps(settings, indent=2))
    run_info = {**settings, "mode": "online", **record()}
    run_path = out / "run.json"
    if not run_path.exists():  # provenance from the start; wall and compile time added at the end
        write_text_atomic(run_path, json.dumps(run_info, indent=2, default=str))
    compiled: dict[int, Any] = {}
    compile_s = 0.0
    start = time.perf_counter()
    bar = _progress(progress, config.env_steps, done_periods * config.eval_every)
    chunks = 0
    while done_periods < config.periods:
        n = min(config.periods_per_chunk, config.periods - done_periods)
        first = jnp.asarray(done_periods, jnp.int32)
        if n not in compiled:
            t0 = time.perf_counter()
            fn = jax.jit(jax.vmap(make_chunk(problem, n), in_axes=(0, None)))
            compiled[n] = fn.lower(carry, first).compile()
            compile_s += time.perf_counter() - t0
        carry, (metrics, snaps) = compiled[n](carry, first)
        metrics, snaps = jax.device_get((metrics, snaps))
        if snapshot is not None:
            _write_snapshots(out / "snapshots", snaps, first_seed, seeds, done_periods, n)
        wall = time.perf_counter() - start
        for s in range(seeds):
            for j in range(n):
                row = {"seed": first_seed + s, "period": done_periods + j}
                row.update({k: float(np.asarray(v)[s, j]) for k, v in metrics.items()})
                row["wall_s"] = wall
                rows.append(row)
        done_periods += n
        table = pd.DataFrame(rows)
        write_text_atomic(metrics_path, table.to_csv(index=False))
        manager.save(done_periods, args=ocp.args.StandardSave(carry))
        manager.wait_until_finished()
        last = table[table.period == done_periods - 1]
        if bar is not None:
            bar.update(n * config.eval_every)
            bar.set_postfix(eval_return=f"{last.eval_return.mean():.1f}",
                            steps_per_s=f"{seeds * done_periods * config.eval_every / wall:.0f}")
        chunks += 1
        if stop_after_chunks is not None and chunks >= stop_after_chunks:
            os._exit(17)  # simulate a crash: no cleanup, no final files
    if bar is not None:
        bar.close()
    finished_before = chunks == 0 and "wall_s" in json.loads(run_path.read_text())
    if not finished_before:  # a finished run resumed again keeps its record
        run_info.update(wall_s=time.perf_counter() - start, compile_s=compile_s)
        write_text_atomic(run_path, json.dumps(run_info, indent=2, default=str))
    return pd.DataFrame(rows)


def _write_snapshots(root: Path, snaps: Any, first_seed: int, seeds: int, first_period: int,
                     periods: int) -> None:
    from flax import serialization

    for s in range(seeds):
        folder = root / f"seed{first_seed + s}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(periods):
            tree = jax.tree.map(lambda x, s=s, j=j: np.asarray(x[s, j]), snaps)
            data = serialization.msgpack_serialize(serialization.to_state_dict(tree))
            write_bytes_atomic(folder / f"period_{first_period + j:05d}.msgpack", data)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="env step", dynamic_ncols=True)
