"""Maze task specs (tasks/maze.toml) as typed, frozen dataclasses; the environment that
reads them is offbench/envs/maze.py. Kept apart from it so that loading specs imports no
physics (offbench.envs.spec reads every task file)."""

from __future__ import annotations

import dataclasses

from offbench.envs import tomlspec

AGENT_NAMES = ("point", "ant")  # offbench.envs.maze.AGENTS
WALL, OPEN, GOAL, RESET, BOTH = "#", ".", "g", "r", "c"
GOAL_MODES = ("eval", "diverse", "any")


@dataclasses.dataclass(frozen=True)
class MazeSpec:
    """Parameters of a maze task (see tasks/maze.toml)."""

    name: str
    family: str
    gymnasium_id: str
    agent: str
    maze_map: tuple[str, ...]
    eval_map: tuple[str, ...]
    maze_size_scaling: float
    maze_height: float
    episode_length: int
    diverse_map: tuple[str, ...] | None = None
    position_noise_range: float = 0.25
    goal_radius: float = 0.45
    # Gymnasium-Robotics draws resets farther than this (x cell size) from the goal
    reset_separation: float = 0.5

    def map_for(self, goals: str) -> tuple[str, ...]:
        if goals not in GOAL_MODES:
            raise ValueError(f"goals={goals!r} is not one of {list(GOAL_MODES)}")
        if goals == "diverse" and self.diverse_map is None:
            raise ValueError(f"task '{self.name}' has no diverse-goal map; goals='eval' or 'any'")
        return {"eval": self.eval_map, "diverse": self.diverse_map, "any": self.maze_map}[goals]


def parse_spec(name: str, raw: dict) -> MazeSpec:
    spec = tomlspec.build(MazeSpec, name, raw)
    if spec.agent not in AGENT_NAMES:
        raise ValueError(f"task spec '{name}': agent must be one of {list(AGENT_NAMES)}")
    for goals in GOAL_MODES:
        if goals == "diverse" and spec.diverse_map is None:
            continue
        grid = spec.map_for(goals)
        if len({len(row) for row in grid}) != 1 or set("".join(grid)) - set("#.grc"):
            raise ValueError(f"task spec '{name}': the {goals} map must be rows of equal length "
                             "made of '#', '.', 'g', 'r', 'c'")
        if _walls(grid) != _walls(spec.maze_map):
            raise ValueError(f"task spec '{name}': the {goals} map's walls differ from maze_map")
    return spec


def _walls(grid: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("".join("#" if c == WALL else "." for c in row) for row in grid)


