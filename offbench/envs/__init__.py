"""Environments: `make(name, backend=None, **overrides)` builds a task on MJX or the C engine."""

from __future__ import annotations

import contextlib
import io
from functools import cache

# brax imports mujoco.mjx, which prints "Failed to import warp" when the optional GPU backend is
# absent; we only use MJX's JAX implementation, so keep that line out of users' output.
with contextlib.redirect_stdout(io.StringIO()):
    from brax.envs.base import Env

from offbench.envs.locomotion import LocomotionEnv
from offbench.envs.maze import MazeEnv, MazeSpec
from offbench.envs.physics import (
    BACKENDS,
    DYNAMICS_OVERRIDES,
    PhysicsState,
    default_backend,
    resolve_backend,
)
from offbench.envs.spec import LocomotionSpec, WaypointSpec, load_specs
from offbench.envs.waypoint import WaypointEnv
from offbench.envs.wrappers import AutoReset, TimeLimit

__all__ = ["BACKENDS", "DYNAMICS_OVERRIDES", "AutoReset", "LocomotionEnv", "LocomotionSpec",
           "MazeEnv", "MazeSpec", "PhysicsState", "TimeLimit", "WaypointEnv", "WaypointSpec",
           "default_backend", "get_spec", "make", "task_names"]


@cache
def _specs() -> dict[str, LocomotionSpec]:
    return load_specs()


def task_names() -> list[str]:
    return list(_specs())


def get_spec(name: str) -> LocomotionSpec:
    specs = _specs()
    if name not in specs:
        raise ValueError(f"unknown task '{name}'; valid tasks: {list(specs)}")
    return specs[name]


def make(name: str, backend: str | None = None, *, episode_length: int | None = None,
         auto_reset: bool = True, wrap: bool = True, **overrides: object) -> Env:
    """Build task `name` on `backend` ("mujoco" C engine, or "mjx"; default by device).

    overrides: dynamics variants (gravity, friction, mass, gear; scale factors, see
    `offbench.envs.physics.apply_dynamics_overrides`); maze tasks also take goals ("eval",
    "diverse", "any"), continuing and reset_target (see `offbench.envs.maze`); the waypoint
    task (`offbench.envs.waypoint`) takes its base task's.
    With `wrap` (default) the env has the task's time limit (1000 steps, or `episode_length`)
    and, with `auto_reset`, starts a fresh episode whenever one ends. `wrap=False` returns the
    bare `LocomotionEnv` (no time limit, no reset), e.g. for brax's own training wrappers.
    """
    spec = get_spec(name)
    backend = resolve_backend(backend)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}'; valid backends: {list(BACKENDS)}")
    family = {MazeSpec: MazeEnv, WaypointSpec: WaypointEnv}.get(type(spec), LocomotionEnv)
    env: Env = family(spec, backend, overrides)
    if wrap:
        env = TimeLimit(env, episode_length or spec.episode_length)
        if auto_reset:
            env = AutoReset(env)
    return env
