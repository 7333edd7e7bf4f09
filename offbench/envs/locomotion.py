"""Gymnasium-v5 locomotion tasks (HalfCheetah, Hopper, Walker2d, Ant) as brax `Env`s.

Observation, reward and termination are written once here, as JAX functions of the
`PhysicsState`, and shared by both physics backends. Each formula mirrors Gymnasium's v5 source
(`gymnasium/envs/mujoco/*_v5.py`), which the tests use as the oracle.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import Env, State

from offbench.envs.physics import PhysicsState, apply_dynamics_overrides, make_physics
from offbench.envs.spec import LocomotionSpec

GYMNASIUM_ASSETS = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets"


def load_model(spec: LocomotionSpec, overrides: Mapping[str, object] | None = None
               ) -> mujoco.MjModel:
    """The task's MjModel, from the installed Gymnasium's own model file, with overrides."""
    with _compiler_warnings_once():
        model = mujoco.MjModel.from_xml_path(str(GYMNASIUM_ASSETS / spec.model_file))
    apply_dynamics_overrides(model, overrides or {})
    return model


_WARNED: set[str] = set()


@contextlib.contextmanager
def _compiler_warnings_once():
    """MuJoCo's compiler prints its warnings (e.g. Gymnasium's half_cheetah.xml uses the
    deprecated `settotalmass`) to the C stderr on every compile, i.e. for every env built: pass
    each distinct line on once per process instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
    for line in lines:
        if line.strip() and line not in _WARNED:
            _WARNED.add(line)
            print(line, file=sys.stderr)


def _within(x: jax.Array, bounds: tuple[float, float], strict: bool) -> jax.Array:
    """lo < x < hi (strict) or lo <= x <= hi, decided as Gymnasium decides it in float64.

    x is float32; comparing it with the float32-rounded bound would misjudge states lying
    between the bound and its rounding (e.g. z = float32(0.8) > 0.8 in float64). Where rounding
    moved a bound, the comparison is adjusted so float32 gives the float64 answer exactly.
    """
    lo, hi = bounds
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if strict:  # lo < x  and  x < hi
        above = x >= lo32 if float(lo32) > lo else x > lo32
        below = x <= hi32 if float(hi32) < hi else x < hi32
    else:  # lo <= x  and  x <= hi
        above = x > lo32 if float(lo32) < lo else x >= lo32
        below = x < hi32 if float(hi32) > hi else x <= hi32
    return above & below


class MujocoEnv(Env):
    """What every offbench task (locomotion here, navigation in maze.py) has in common: a
    MuJoCo `model` whose actuators are the action space, behind a `physics` backend."""

    model: mujoco.MjModel
    physics: object
    spec: object  # the task's spec dataclass (has .name)

    @property
    def action_size(self) -> int:
        return self.model.nu

    @property
    def backend(self) -> str:
        return self.physics.name

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Gymnasium's action space: the actuators' control ranges."""
        lo, hi = self.model.actuator_ctrlrange.T.astype(np.float32)
        return lo, hi

    def _check_action(self, action: jax.Array) -> jax.Array:
        """The action as float32; one clear error for a wrong shape or, eagerly, NaN/Inf."""
        shape = jnp.shape(action)
        if shape != (self.action_size,):
            raise ValueError(
                f"action for task '{self.spec.name}' must have shape ({self.action_size},), got "
                f"{shape}; for a batch of environments, jax.vmap the step function")
        if not isinstance(action, jax.core.Tracer):
            values = np.asarray(action)
            if not np.all(np.isfinite(values)):
                raise ValueError(f"action for task '{self.spec.name}' contains NaN or Inf: "
                                 f"{values.tolist()}")
        return jnp.asarray(action, jnp.float32)


class LocomotionEnv(MujocoEnv):
    """One environment instance; `jax.vmap` its `reset`/`step` for batches.

    This bare env has no time limit and no auto-reset: `offbench.envs.make` adds them
    (`TimeLimit`, `AutoReset`), or use brax's own training wrappers on it.

    Non-finite actions: called eagerly with concrete values, `step` raises ValueError. Inside
    `jit` it cannot raise, so the step is refused instead: the physics state is kept, the reward
    is NaN (so it can never pass for a score), `done` is 1 and `info["invalid_action"]` is 1.
    """

    def __init__(self, spec: LocomotionSpec, backend: str, overrides: Mapping[str, object]):
        self.spec = spec
        self.overrides = dict(overrides)
        self.model = load_model(spec, overrides)
        self._free_root = self.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
        self.physics = make_physics(backend, self.model, spec.frame_skip, spec.main_body,
                                    spec.needs_contact_forces, track_main_body=self._free_root)
        self.dt = float(self.model.opt.timestep * spec.frame_skip)
        self._init_qpos = jnp.asarray(self.model.qpos0, jnp.float32)
        self._ncfrc = self.model.nbody * 6  # zeros unless the task reads contact forces

    # -- brax Env interface -------------------------------------------------------------------
    @property
    def observation_size(self) -> int:
        m, s = self.model, self.spec
        size = m.nq - s.exclude_qpos + m.nv
        return size + ((m.nbody - 1) * 6 if s.contact_forces_in_obs else 0)

    def reset(self, rng: jax.Array) -> State:
        s, m = self.spec, self.model
        key_pos, key_vel = jax.random.split(rng)
        noise = s.reset_noise_scale
        qpos = self._init_qpos + jax.random.uniform(key_pos, (m.nq,), minval=-noise, maxval=noise)
        if s.qvel_noise == "normal":
            qvel = noise * jax.random.normal(key_vel, (m.nv,))
        else:
            qvel = jax.random.uniform(key_vel, (m.nv,), minval=-noise, maxval=noise)
        physics = self.initial_physics(qpos, qvel)
        zeros = {k: jnp.zeros((), jnp.float32) for k in self.metric_names}
        zeros["x_position"] = qpos[0]
        return State(pipeline_state=physics, obs=self.observation(physics),
                     reward=jnp.zeros((), jnp.float32), done=jnp.zeros((), jnp.float32),
                     metrics=zeros, info={"invalid_action": jnp.zeros((), jnp.float32)})

    def step(self, state: State, action: jax.Array) -> State:
        action = self._check_action(action)
        valid = jnp.all(jnp.isfinite(action))
        before = state.pipeline_state
        after = self.physics.step(before, jnp.where(valid, action, 0.0))
        after = jax.tree.map(lambda new, old: jnp.where(valid, new, old), after, before)
        reward, metrics = self.reward(before, after, action)
        terminated = self.terminated(after)
        return state.replace(
            pipeline_state=after, obs=self.observation(after),
            reward=jnp.where(valid, reward, jnp.nan),
            done=jnp.where(valid, terminated, 1.0).astype(jnp.float32),
            metrics={**state.metrics, **metrics},  # keep keys wrappers added (brax does)
            info={**state.info, "invalid_action": (~valid).astype(jnp.float32)})

    def initial_physics(self, qpos: jax.Array, qvel: jax.Array) -> PhysicsState:
        """The physics state Gymnasium has after `reset` put the robot at (qpos, qvel).

        After mj_resetData + mj_forward: no warm start, no contact forces yet, and the main
        body sits where its free joint puts it.
        """
        m = self.model
        qpos, qvel = jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32)
        return PhysicsState(
            qpos=qpos, qvel=qvel, qacc_warmstart=jnp.zeros(m.nv, jnp.float32),
            xpos_main=self._root_position(qpos), cfrc_ext=jnp.zeros(self._ncfrc, jnp.float32))

    # -- task functions, shared by both backends -----------------------------------------------
    @property
    def metric_names(self) -> tuple[str, ...]:
        names = ["x_position", "x_velocity", "reward_forward", "reward_ctrl"]
        if self.spec.has_health:
            names.append("reward_survive")
        if self.spec.contact_cost_weight:
            names += ["reward_contact", "y_velocity"]
        return tuple(names)

    def _root_position(self, qpos: jax.Array) -> jax.Array:
        if self._free_root:
            return qpos[:3]
        return jnp.zeros(3, jnp.float32)  # planar walkers read qpos[0] instead

    def contact_forces(self, physics: PhysicsState) -> jax.Array:
        lo, hi = self.spec.contact_force_range
        return jnp.clip(physics.cfrc_ext.reshape(-1, 6), lo, hi)

    def observation(self, physics: PhysicsState) -> jax.Array:
        s = self.spec
        qvel = physics.qvel
        if s.clip_qvel is not None:
            qvel = jnp.clip(qvel, -s.clip_qvel, s.clip_qvel)
        parts = [physics.qpos[s.exclude_qpos:], qvel]
        if s.contact_forces_in_obs:
            parts.append(self.contact_forces(physics)[1:].reshape(-1))
        return jnp.concatenate(parts).astype(jnp.float32)

    def is_healthy(self, physics: PhysicsState) -> jax.Array:
        s = self.spec
        strict = s.healthy_bounds == "strict"
        qpos, state = physics.qpos, jnp.concatenate([physics.qpos, physics.qvel])
        healthy = jnp.array(True)
        if s.healthy_requires_finite:
            healthy &= jnp.all(jnp.isfinite(state))
        if s.healthy_state_range is not None:
            healthy &= jnp.all(_within(state[2:], s.healthy_state_range, strict))
        if s.healthy_z_range is not None:
            z = qpos[2] if self._free_root else qpos[1]
            healthy &= _within(z, s.healthy_z_range, strict)
        if s.healthy_angle_range is not None:
            healthy &= _within(qpos[2], s.healthy_angle_range, strict)
        return healthy

    def reward(self, before: PhysicsState, after: PhysicsState, action: jax.Array
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
        s = self.spec
        if self._free_root:  # Gymnasium's Ant reads the main body's xpos; planar ones qpos[0]
            velocity = (after.xpos_main[:2] - before.xpos_main[:2]) / self.dt
        else:
            velocity = (after.qpos[:1] - before.qpos[:1]) / self.dt
        forward = s.forward_reward_weight * velocity[0]
        ctrl_cost = s.ctrl_cost_weight * jnp.sum(jnp.square(action))
        metrics = {"x_position": after.qpos[0], "x_velocity": velocity[0],
                   "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        reward = forward - ctrl_cost
        if s.has_health:
            survive = s.healthy_reward * self.is_healthy(after).astype(jnp.float32)
            metrics["reward_survive"] = survive
            reward = reward + survive
        if s.contact_cost_weight:
            contact_cost = s.contact_cost_weight * jnp.sum(jnp.square(self.contact_forces(after)))
            metrics["reward_contact"] = -contact_cost
            metrics["y_velocity"] = velocity[1]
            reward = reward - contact_cost
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return reward.astype(jnp.float32), metrics

    def terminated(self, physics: PhysicsState) -> jax.Array:
        if not self.spec.terminate_when_unhealthy:
            return jnp.zeros((), jnp.float32)
        return (~self.is_healthy(physics)).astype(jnp.float32)

