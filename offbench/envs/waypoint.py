"""The waypoint task: Ant-v5 running towards a sequence of waypoints on open ground.

This is the task the AntMaze datasets' navigation controller is trained on
(tasks/policies/ant-nav/, offbench/data/antmaze.py), by offbench's SAC on the C backend. It is
offbench's own: Gymnasium has no such environment, and D4RL's goal-reaching ant was trained in
its own code. It is a task like the others (`offbench.envs.make("ant-waypoint")`, a row of
`offbench tasks`), so `offbench train-online` trains on it; it has no datasets.

Semantics (spec: tasks/waypoint.toml; every physics and reward term is the base task's, Ant-v5):
* Waypoints: at reset the first one is `segment` m (4 m, an AntMaze cell) from the ant in a
  uniformly random direction. When the ant comes within `reach` m of it (2 m: the ant has
  entered the waypoint's cell, where D4RL's planner moves on to the next cell centre), the next
  waypoint is `segment` m beyond it, along the previous leg turned by an angle drawn uniformly
  from `turns` (left, straight, right: the turns of a path through a maze's cells).
* Observation: Ant-v5's (qpos[2:], qvel, contact forces of bodies 1.. clipped to [-1, 1]) of
  the state seen from a frame rotated so that the waypoint's bearing is +x
  (`heading_observation`). Physics is equivariant under rotations about the vertical axis, so
  "run towards the waypoint" is, in that frame, Ant-v5's "run along +x"; the observation has
  Ant-v5's size and meaning, and a waypoint switch is a sudden turn of that frame.
* Reward: Ant-v5's with the forward term replaced by the torso's velocity towards the waypoint
  (its x, y velocity over the step projected on the unit vector from the position before the
  step to the waypoint): towards + healthy reward - control cost - contact cost.
* Termination: Ant-v5's (torso z outside its healthy range) and, with `flip_terminates`, a flip
  (the torso's z axis points down: the ant cannot get up, and in a maze it would stay there).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from brax.envs.base import State

from offbench.envs.locomotion import LocomotionEnv
from offbench.envs.spec import WaypointSpec

# -- rotations about the vertical axis ------------------------------------------------------------


def _quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return jnp.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                      w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def rot2(v: jax.Array, angle: jax.Array) -> jax.Array:
    """2-d vectors (last axis) rotated by `angle`."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def wrap_angle(angle: jax.Array) -> jax.Array:
    return (angle + jnp.pi) % (2 * jnp.pi) - jnp.pi


def rotate_physics(physics, angle: jax.Array):
    """The ant's physics state rotated by `angle` about the world's z axis (through the
    origin): position (and the main body's), torso orientation, world-frame linear velocity (and
    its warm-start acceleration) and world-frame contact forces; body-frame angular velocity and
    joints stay."""
    half = angle / 2
    qpos = physics.qpos.at[:2].set(rot2(physics.qpos[:2], angle)).at[3:7].set(
        _quat_mul(jnp.stack([jnp.cos(half), 0.0, 0.0, jnp.sin(half)]), physics.qpos[3:7]))
    qvel = physics.qvel.at[:2].set(rot2(physics.qvel[:2], angle))
    warm = physics.qacc_warmstart.at[:2].set(rot2(physics.qacc_warmstart[:2], angle))
    f = physics.cfrc_ext.reshape(-1, 6)  # per body: torque (3), force (3), world frame
    f = f.at[:, 0:2].set(rot2(f[:, 0:2], angle)).at[:, 3:5].set(rot2(f[:, 3:5], angle))
    main = physics.xpos_main.at[:2].set(rot2(physics.xpos_main[:2], angle))
    return physics.replace(qpos=qpos, qvel=qvel, qacc_warmstart=warm, cfrc_ext=f.reshape(-1),
                           xpos_main=main)


def heading_observation(physics, heading: jax.Array) -> jax.Array:
    """Ant-v5's observation (qpos[2:], qvel, contact forces of bodies 1.. clipped to [-1, 1])
    of the state seen from a frame rotated by -heading: running along +x there is running
    along `heading` here. The quaternion is taken with w >= 0 (the same rotation)."""
    r = rotate_physics(physics, -heading)
    q = r.qpos[3:7]
    q = jnp.where(q[0] < 0, -q, q)
    forces = jnp.clip(r.cfrc_ext.reshape(-1, 6)[1:], -1.0, 1.0).reshape(-1)
    return jnp.concatenate([r.qpos[2:3], q, r.qpos[7:], r.qvel, forces]).astype(jnp.float32)


def flipped(physics) -> jax.Array:
    """The torso's z axis points down (the ant lies on its back)."""
    x, y = physics.qpos[4], physics.qpos[5]
    return 1.0 - 2.0 * (x * x + y * y) < 0.0


def bearing(physics, target: jax.Array) -> jax.Array:
    """Direction (rad) from the ant's x, y to `target`."""
    d = target - physics.qpos[:2]
    return jnp.arctan2(d[1], d[0])


# -- the environment ------------------------------------------------------------------------------


class WaypointEnv(LocomotionEnv):
    """The waypoint task on its base locomotion task (module docstring). `self.spec` is the
    WaypointSpec, which answers for the base spec's fields (the physics and reward terms)."""

    def __init__(self, spec: WaypointSpec, backend: str, overrides: Mapping[str, object]):
        super().__init__(spec, backend, overrides)
        if not self._free_root:
            raise ValueError(f"task '{spec.name}': the waypoint task needs a free-floating "
                             f"base (the ant), not '{spec.base_task}'")
        self._turns = jnp.deg2rad(jnp.asarray(spec.turns, jnp.float32))

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*super().metric_names, "velocity_towards", "waypoints")

    def reset(self, rng: jax.Array) -> State:
        k_base, k_dir, k_next = jax.random.split(rng, 3)
        state = super().reset(k_base)
        direction = jax.random.uniform(k_dir, (), minval=-jnp.pi, maxval=jnp.pi)
        target = state.pipeline_state.qpos[:2] + self.spec.segment * jnp.stack(
            [jnp.cos(direction), jnp.sin(direction)])
        info = {**state.info, "waypoint": target.astype(jnp.float32), "leg": direction,
                "waypoint_key": jax.random.key_data(k_next)}
        return state.replace(obs=self._observe(state.pipeline_state, target), info=info)

    def step(self, state: State, action: jax.Array) -> State:
        target = state.info["waypoint"]
        stepped = super().step(state, action)
        before, after = state.pipeline_state, stepped.pipeline_state
        d = target - before.qpos[:2]
        unit = d / jnp.maximum(jnp.linalg.norm(d), 1e-6)
        towards = jnp.dot((after.xpos_main[:2] - before.xpos_main[:2]) / self.dt, unit)
        reward = (stepped.reward - stepped.metrics["reward_forward"]
                  + self.spec.forward_reward_weight * towards)
        done = jnp.maximum(stepped.done, self._flip(after))

        reached = jnp.linalg.norm(target - after.qpos[:2]) < self.spec.reach
        key, sub = jax.random.split(jax.random.wrap_key_data(state.info["waypoint_key"]))
        leg = wrap_angle(state.info["leg"] + jax.random.choice(sub, self._turns))
        leg = jnp.where(reached, leg, state.info["leg"])
        target = jnp.where(reached, target + self.spec.segment * jnp.stack(
            [jnp.cos(leg), jnp.sin(leg)]), target).astype(jnp.float32)
        metrics = {**stepped.metrics, "velocity_towards": towards.astype(jnp.float32),
                   "waypoints": state.metrics["waypoints"] + reached.astype(jnp.float32)}
        info = {**stepped.info, "waypoint": target, "leg": leg,
                "waypoint_key": jnp.where(reached, jax.random.key_data(key),
                                          state.info["waypoint_key"])}
        return stepped.replace(obs=self._observe(after, target), reward=reward, done=done,
                               metrics=metrics, info=info)

    def _flip(self, physics) -> jax.Array:
        return (flipped(physics) & self.spec.flip_terminates).astype(jnp.float32)

    def _observe(self, physics, target: jax.Array) -> jax.Array:
        return heading_observation(physics, bearing(physics, target))
