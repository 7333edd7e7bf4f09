"""Helpers that drive Gymnasium's own v5 environments (the C-MuJoCo oracle) step by step."""

from __future__ import annotations

import gymnasium
import numpy as np

from offbench.envs import LocomotionEnv, PhysicsState


def make_gym(env: LocomotionEnv):
    return gymnasium.make(env.spec.gymnasium_id).unwrapped


def round_state_to_float32(gym_env) -> None:
    """Put Gymnasium's state on float32 values so both simulators start from identical numbers."""
    d = gym_env.data
    for field in (d.qpos, d.qvel, d.qacc_warmstart, d.xpos, d.cfrc_ext):
        field[:] = field.astype(np.float32)


def physics_of(env: LocomotionEnv, gym_env) -> PhysicsState:
    """Our PhysicsState holding exactly Gymnasium's current state."""
    d = gym_env.data
    cfrc = d.cfrc_ext.reshape(-1) if env.spec.needs_contact_forces else np.zeros(d.cfrc_ext.size)
    return PhysicsState(*(np.asarray(x, np.float32) for x in (
        d.qpos, d.qvel, d.qacc_warmstart, d.xpos[env.spec.main_body], cfrc)))
