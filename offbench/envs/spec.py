"""Task specs: the TOML files under `tasks/` turned into typed, frozen dataclasses."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from pathlib import Path

from offbench.envs import maze_spec, tomlspec

# `tasks/` sits at the repository root beside `offbench/` (the product card fixes the layout);
# OFFBENCH_TASKS_DIR points elsewhere, e.g. for a non-editable install.
TASKS_DIR = Path(os.environ.get("OFFBENCH_TASKS_DIR",
                                Path(__file__).resolve().parents[2] / "tasks"))


@dataclasses.dataclass(frozen=True)
class LocomotionSpec:
    """Parameters of a Gymnasium-v5-style locomotion task (see tasks/locomotion.toml)."""

    name: str
    gymnasium_id: str
    model_file: str
    frame_skip: int
    forward_reward_weight: float
    ctrl_cost_weight: float
    reset_noise_scale: float
    qvel_noise: str
    exclude_qpos: int
    episode_length: int
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    healthy_state_range: tuple[float, float] | None = None
    healthy_z_range: tuple[float, float] | None = None
    healthy_angle_range: tuple[float, float] | None = None
    healthy_bounds: str = "strict"
    healthy_requires_finite: bool = False
    clip_qvel: float | None = None
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] = (-math.inf, math.inf)
    contact_forces_in_obs: bool = False
    main_body: int = 1

    @property
    def has_health(self) -> bool:
        return self.healthy_reward != 0.0 or self.terminate_when_unhealthy

    @property
    def needs_contact_forces(self) -> bool:
        return self.contact_forces_in_obs or self.contact_cost_weight != 0.0


@dataclasses.dataclass(frozen=True)
class WaypointSpec:
    """The waypoint task (tasks/waypoint.toml, offbench/envs/waypoint.py): a locomotion task
    (`base_task`) running towards waypoints. Fields it does not have are the base spec's."""

    name: str
    family: str
    gymnasium_id: str
    base_task: str
    episode_length: int
    segment: float  # metres between consecutive waypoints
    reach: float  # the next waypoint comes when the agent is this close (metres)
    turns: tuple[float, ...]  # degrees; each leg turns from the previous by one of them
    flip_terminates: bool = True
    base: LocomotionSpec | None = None  # filled by load_specs from `base_task`

    def __getattr__(self, name: str):
        base = self.__dict__.get("base")
        if base is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(base, name)


def _parse(name: str, raw: dict) -> LocomotionSpec:
    if raw.get("family") == "waypoint":
        return tomlspec.build(WaypointSpec, name, raw)
    if raw.get("family") == "maze":  # navigation tasks (tasks/maze.toml, offbench/envs/maze.py)
        return maze_spec.parse_spec(name, raw)
    spec = tomlspec.build(LocomotionSpec, name, raw)
    if spec.qvel_noise not in ("normal", "uniform"):
        raise ValueError(f"task spec '{name}': qvel_noise must be 'normal' or 'uniform'")
    if spec.healthy_bounds not in ("strict", "closed"):
        raise ValueError(f"task spec '{name}': healthy_bounds must be 'strict' or 'closed'")
    return spec


def load_specs(tasks_dir: Path = TASKS_DIR) -> dict[str, LocomotionSpec]:
    """All task specs found in `tasks_dir/*.toml`, by task name."""
    specs: dict[str, LocomotionSpec] = {}
    for path in sorted(Path(tasks_dir).glob("*.toml")):
        with open(path, "rb") as f:
            for name, raw in tomllib.load(f).items():
                if name in specs:
                    raise ValueError(f"task '{name}' is defined twice (again in {path})")
                specs[name] = _parse(name, raw)
    for name, spec in specs.items():
        if isinstance(spec, WaypointSpec):
            base = specs.get(spec.base_task)
            if not isinstance(base, LocomotionSpec):
                raise ValueError(f"task spec '{name}': base_task '{spec.base_task}' is not a "
                                 "locomotion task")
            specs[name] = dataclasses.replace(spec, base=base)
    if not specs:
        raise FileNotFoundError(f"no task specs (*.toml) found in {tasks_dir}; "
                                "set OFFBENCH_TASKS_DIR to the repository's tasks/ folder")
    return specs
