"""Model rollouts from dataset states into an on-device buffer (MOPO, MOBILE, MBPO).

`rollout` runs h steps of the policy in a learned model from a batch of start states, one
`lax.scan`; a row that terminated stays in the scan but marks the rows after it invalid, and
`ModelBuffer.add` writes only the valid rows (as OfflineRL-Kit's `rollout` stops terminated
trajectories): the rows of one call are ordered valid first and the write pointer moves by the
number of valid rows, so a buffer only ever hands out transitions the reference would have
stored. The ring buffer keeps the newest `capacity - rows per call` valid rows.

Termination (OfflineRL-Kit's utils/termination_fns.py, from MOPO's static_fns, on raw
observations): hopper: done unless finite, |s'[1:]| < 100, height > 0.7, |angle| < 0.2;
walker2d: unless |s'| < 100, 0.8 < height < 2, -1 < angle < 1; halfcheetah: unless |s'| < 100;
ant: unless finite, 0.2 <= z <= 1. Declared difference: hopper's bound is two-sided
(|s'[1:]| < 100, Gymnasium's healthy range; OfflineRL-Kit's `np.abs(next_obs[:, 1:] < 100)`
is one-sided). `termination_code(name, obs)` picks one by name; "auto" picks by observation
size (11 hopper, 27 or 105 ant), and for 17 (walker2d and halfcheetah share it) by the data:
walker2d when the mean of the first observation (the torso height, ~1.25 for walker2d, the
root z near 0 for halfcheetah) is above 0.5.

True dynamics (`true_rollout`, MOPO's and MOBILE's `dynamics = "true"`): the same rollouts with
the task's own env step (`offbench.envs.make(task, backend)`, the loop's backend, stepped inside
the compiled program) in place of the model: the env's next observation, reward and termination
(its healthy rule, not the static rules above). Each start state's physics state is the
dataset's own where the dataset carries it: offbench's locomotion datasets store each
transition's start (qpos, qvel) (offbench/data/builder.py, PHYSICS_FILES), which the loader
gives as the derived field `physics` (qpos ++ qvel) and the offline loop asks for with
`dynamics = "true"`; `physics_from_dataset` makes the env's state of it with
`env.initial_physics`, as a reset would. What remains inexact there: the solver's warm start
(zero, as after a reset; the dataset's comes from the previous step: a difference at the
solver's tolerance), and for Ant the main body's position (`xpos_main`), which its forward
reward reads and which in the dataset lags qpos by one integrator stage, while initial_physics
puts it at qpos (the first step's reward differs by that lag; its dynamics and observation do
not). With stored states every locomotion task is allowed, Ant too.

Without them (datasets built before they were stored, variants, Minari datasets made
elsewhere: the loader leaves `physics` out and the loop says so once on stderr) the start state
is rebuilt from the observation (`physics_from_obs`), which only the planar tasks allow
(HalfCheetah, Hopper, Walker2d: Gymnasium v5 observations are qpos[1:] and qvel, float32 as our
physics state): the observation is the state except for
- the root x position qpos[0], set to 0: nothing in the step depends on it (a flat infinite
  floor; the forward reward is the x displacement over the step, the same from any x) except
  float32 rounding of x (the dataset's x differs), ~1e-6 * |x| / dt in the reward;
- Hopper's and Walker2d's velocities, clipped to [-10, 10] in the observation: where a velocity
  sits at the bound the start state is one with that observation (the velocity at +-10), not
  necessarily the dataset's. Measured: 0.4% of hopper-medium-replay-100k's rows, 41% of
  walker2d-medium-expert-100k's; halfcheetah does not clip (exact). The stored states are
  exact there (tests/test_mopo.py steps such rows both ways);
- the solver's warm start, as above.
Steps after the first carry the full physics state (unclipped velocities, x). The tests
(tests/test_mopo.py) step dataset rows both ways and get the dataset's next observations and
rewards back. Ant is refused without stored states: its root (x, y) and the main body's
position are not in its observation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import State
from flax import struct

from offbench import envs
from offbench.algorithms import Transition
from offbench.loops.rollout import to_env_action
from offbench.models import ensemble

TERMINATIONS = ("none", "hopper", "walker2d", "halfcheetah", "ant")


def termination_code(name: str, obs: jax.Array) -> jax.Array:
    """The index in TERMINATIONS of a task's termination rule ("auto": from the data)."""
    if name != "auto":
        if name not in TERMINATIONS:
            raise ValueError(f"termination must be 'auto' or one of {TERMINATIONS}, got {name!r}")
        return jnp.asarray(TERMINATIONS.index(name), jnp.int32)
    size = obs.shape[-1]
    if size == 11:
        return jnp.asarray(TERMINATIONS.index("hopper"), jnp.int32)
    if size in (27, 105):
        return jnp.asarray(TERMINATIONS.index("ant"), jnp.int32)
    if size == 17:
        walker = obs[:, 0].mean() > 0.5
        return jnp.where(walker, TERMINATIONS.index("walker2d"),
                         TERMINATIONS.index("halfcheetah")).astype(jnp.int32)
    return jnp.asarray(0, jnp.int32)


def terminal(code: jax.Array, next_obs: jax.Array) -> jax.Array:
    """(B,) bool: the rule `code` (an index in TERMINATIONS) applied to raw next observations."""
    finite = jnp.isfinite(next_obs).all(-1)
    bounded = (jnp.abs(next_obs) < 100).all(-1)
    h, angle = next_obs[:, 0], next_obs[:, 1]
    alive = jnp.stack([
        jnp.ones_like(finite),
        finite & (jnp.abs(next_obs[:, 1:]) < 100).all(-1) & (h > 0.7) & (jnp.abs(angle) < 0.2),
        bounded & (h > 0.8) & (h < 2.0) & (angle > -1.0) & (angle < 1.0),
        bounded,
        finite & (h >= 0.2) & (h <= 1.0)])
    return ~alive[code]


class ModelBuffer(struct.PyTreeNode):
    data: Transition  # each field (capacity, ...)
    ptr: jax.Array  # next row to write
    size: jax.Array  # valid rows that can be sampled (newest first, ending at ptr - 1)


def empty(capacity: int, obs_size: int, action_size: int) -> ModelBuffer:
    z = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)  # noqa: E731
    return ModelBuffer(Transition(z(obs_size), z(action_size), z(), z(obs_size), z()),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: ModelBuffer, rows: Transition, valid: jax.Array) -> ModelBuffer:
    """Write the valid rows of a call: all rows are written from ptr on, valid first, and ptr
    moves by the valid count, so invalid rows are overwritten by the next call and never
    sampled (size stays below capacity - rows per call)."""
    n = valid.shape[0]
    capacity = buffer.data.reward.shape[0]
    if capacity < 2 * n:
        raise ValueError(f"a model buffer of {capacity} rows cannot take {n} rows per call")
    order = jnp.argsort(~valid, stable=True)
    index = (buffer.ptr + jnp.arange(n)) % capacity

    def write(b, r):  # invalid rows zeroed (past a termination they may be Inf/NaN)
        r = jnp.where(valid.reshape(-1, *[1] * (r.ndim - 1)), r, 0)
        return b.at[index].set(r[order].astype(b.dtype))
    data = jax.tree.map(write, buffer.data, Transition(rows.obs, rows.action, rows.reward,
                                                        rows.next_obs, rows.terminal))
    count = valid.sum().astype(jnp.int32)
    return ModelBuffer(data, (buffer.ptr + count) % capacity,
                       jnp.minimum(buffer.size + count, capacity - n))


def sample(buffer: ModelBuffer, key: jax.Array, n: int) -> Transition:
    """n rows uniformly from the valid ones (rows of zeros while the buffer is empty)."""
    capacity = buffer.data.reward.shape[0]
    offset = jax.random.randint(key, (n,), 0, jnp.maximum(buffer.size, 1))
    index = (buffer.ptr - 1 - offset) % capacity
    return jax.tree.map(lambda x: x[index], buffer.data)


def rollout(model: ensemble.ModelState, policy: Callable[[jax.Array, jax.Array], jax.Array],
            start: jax.Array, length: int, key: jax.Array, code: jax.Array,
            reward_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None
            ) -> tuple[Transition, jax.Array, dict]:
    """`length` model steps from `start` (B, obs) with actions policy(obs, key): the rows
    (length * B, step-major), their validity, and the mean raw reward and penalty over valid
    rows. reward_fn(reward, means, stds) -> reward used (MOPO's penalty); None: the model's."""

    def one(carry, k):
        obs, alive = carry
        k_action, k_model = jax.random.split(k)
        action = policy(obs, k_action)
        next_obs, reward, means, stds = ensemble.sample_step(model, obs, action, k_model)
        used = reward if reward_fn is None else reward_fn(reward, means, stds)
        done = terminal(code, next_obs)
        row = Transition(obs, action, used, next_obs, done.astype(jnp.float32))
        return (next_obs, alive & ~done), (row, alive, reward - used)

    _, (rows, valid, penalty) = jax.lax.scan(
        one, (start, jnp.ones(start.shape[0], bool)), jax.random.split(key, length))
    rows, valid, penalty = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]),
                                        (rows, valid, penalty))
    count = jnp.maximum(valid.sum(), 1)
    info = {"model_reward": jnp.sum((rows.reward + penalty) * valid) / count,
            "model_penalty": jnp.sum(penalty * valid) / count,
            "rollout_valid": valid.mean()}
    return rows, valid, info


# ---- true dynamics ------------------------------------------------------------------------

@functools.cache
def true_env(task: str, backend: str | None, from_obs: bool = True):
    """The bare env (no time limit, no reset) of a locomotion task, for true rollouts; one whose
    start states are rebuilt from observations (`from_obs`, no stored physics) must be planar."""
    env = envs.make(task, backend, wrap=False)
    spec = getattr(env, "spec", None)
    if not isinstance(spec, envs.LocomotionSpec):
        raise ValueError(f"true dynamics step a locomotion task's physics; task '{task}' is not "
                         "one (offbench/models/rollouts.py)")
    planar = (spec.exclude_qpos == 1 and not env._free_root and not spec.contact_forces_in_obs
              and env.model.nq - 1 + env.model.nv == env.observation_size)
    if from_obs and not planar:
        raise ValueError(f"true dynamics without the dataset's physics states rebuild them from "
                         f"the observation, which only the planar locomotion tasks "
                         f"(halfcheetah, hopper, walker2d) allow; task '{task}' does not: use a "
                         "dataset that carries them (offbench/models/rollouts.py)")
    return env


def physics_from_obs(env, obs: jax.Array):
    """(B, obs) observations -> the batch of physics states they describe (module docstring)."""
    nq, nv = env.model.nq, env.model.nv
    qpos = jnp.concatenate([jnp.zeros((obs.shape[0], 1), obs.dtype), obs[:, :nq - 1]], -1)
    return jax.vmap(env.initial_physics)(qpos, obs[:, nq - 1:nq - 1 + nv])


def physics_from_dataset(env, physics: jax.Array):
    """(B, nq + nv) stored start states (the loader's `physics`: qpos ++ qvel) -> the batch of
    the env's physics states (module docstring)."""
    nq, nv = env.model.nq, env.model.nv
    if physics.shape[-1] != nq + nv:
        raise ValueError(f"physics rows have {physics.shape[-1]} values; task "
                         f"'{env.spec.name}' needs nq + nv = {nq + nv}")
    return jax.vmap(env.initial_physics)(physics[:, :nq], physics[:, nq:])


def env_step(env, physics, action: jax.Array):
    """One batched env step from physics states: (next physics, next obs, reward, done)."""
    zero = jnp.zeros(action.shape[0], jnp.float32)
    state = State(pipeline_state=physics, obs=jnp.zeros((action.shape[0],
                                                         env.observation_size)),
                  reward=zero, done=zero, metrics={}, info={"invalid_action": zero})
    out = jax.vmap(env.step)(state, to_env_action(env, action))
    return out.pipeline_state, out.obs, out.reward, out.done


def true_rollout(env, policy: Callable[[jax.Array, jax.Array], jax.Array], start: jax.Array,
                 length: int, key: jax.Array, physics: jax.Array | None = None
                 ) -> tuple[Transition, jax.Array, dict]:
    """`rollout` with the task's own step (module docstring): same rows, validity and metrics
    (the penalty is 0: the true model has no uncertainty). physics: the start observations'
    stored states (B, nq + nv); None: rebuilt from the observations."""

    def one(carry, k):
        physics, obs, alive = carry
        action = policy(obs, k)
        physics, next_obs, reward, done = env_step(env, physics, action)
        row = Transition(obs, action, reward, next_obs, done)
        return (physics, next_obs, alive & (done == 0)), (row, alive)

    first = physics_from_obs(env, start) if physics is None \
        else physics_from_dataset(env, physics)
    carry = (first, start, jnp.ones(start.shape[0], bool))
    _, (rows, valid) = jax.lax.scan(one, carry, jax.random.split(key, length))
    rows, valid = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), (rows, valid))
    count = jnp.maximum(valid.sum(), 1)
    info = {"model_reward": jnp.sum(rows.reward * valid) / count,
            "model_penalty": jnp.zeros(()), "rollout_valid": valid.mean()}
    return rows, valid, info
