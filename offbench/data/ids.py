"""Dataset names. Short ids `TASK-KIND[-SIZE]` (e.g. `hopper-medium-replay`, `ant-expert-100k`)
map to Minari ids `offbench/TASK/KIND[-SIZE]-v0`; the size suffix appears only when the size is
not the D4RL default of 1M transitions. Ids with a `/` are Minari ids (ours or any other).

Kinds depend on the task's family: locomotion has D4RL's MuJoCo kinds (KINDS); the PointMaze
tasks have two kinds (offbench/data/maze2d.py): `maze2d`, their default kind, left out of the
short id as D4RL names them (`pointmaze-umaze`, `pointmaze-umaze-100k`; Minari id
`offbench/pointmaze-umaze/maze2d-100k-v0`), and `fixed`, the same data relabeled to the task's
evaluation goal (`pointmaze-medium-fixed-100k`; Minari id
`offbench/pointmaze-medium/fixed-100k-v0`). AntMaze has D4RL's kinds (offbench/data/antmaze.py):
`play` and `diverse` (`antmaze-medium-play`, `antmaze-large-diverse-100k`); antmaze-umaze's
`play` is D4RL's `antmaze-umaze`, its default kind (`antmaze-umaze`, `antmaze-umaze-diverse`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import offbench.envs as envs

KINDS = ("random", "medium", "expert", "medium-expert", "medium-replay", "full-replay")
# by agent; the first is the default kind (AntMaze: only on antmaze-umaze, see default_kind)
MAZE_KINDS = {"point": ("maze2d", "fixed"), "ant": ("play", "diverse")}
DEFAULT_SIZE = 1_000_000
NAMESPACE = "offbench"
VERSION = 0


def data_root(root: str | Path | None = None) -> Path:
    """Where datasets live: `root`, else $OFFBENCH_DATASETS, else ~/.offbench/datasets."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("OFFBENCH_DATASETS", Path.home() / ".offbench" / "datasets"))


def kinds(task: str) -> tuple[str, ...]:
    """The dataset kinds of a task (an unknown task raises, listing the valid ones)."""
    spec = envs.get_spec(task)
    if isinstance(spec, envs.MazeSpec):
        return MAZE_KINDS[spec.agent]
    return KINDS


def default_kind(task: str) -> str | None:
    """The kind a short id may leave out (the navigation tasks' single kind), else None."""
    spec = envs.get_spec(task)
    if isinstance(spec, envs.MazeSpec) and MAZE_KINDS[spec.agent]:
        if spec.agent == "ant" and spec.diverse_map is not None:
            return None  # D4RL names both kinds: antmaze-medium-play, antmaze-medium-diverse
        return MAZE_KINDS[spec.agent][0]
    return None


def format_size(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}m"
    if size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([km]?)", text.lower())
    if not match:
        raise ValueError(f"bad dataset size '{text}': use a number of transitions such as "
                         "100000, 100k or 1m")
    return int(match.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[match.group(2)]


@dataclasses.dataclass(frozen=True)
class DatasetName:
    task: str
    kind: str
    size: int = DEFAULT_SIZE

    @property
    def short(self) -> str:
        suffix = "" if self.size == DEFAULT_SIZE else f"-{format_size(self.size)}"
        kind = "" if self.kind == default_kind(self.task) else f"-{self.kind}"
        return f"{self.task}{kind}{suffix}"

    @property
    def minari_id(self) -> str:
        suffix = "" if self.size == DEFAULT_SIZE else f"-{format_size(self.size)}"
        return f"{NAMESPACE}/{self.task}/{self.kind}{suffix}-v{VERSION}"

    def path(self, root: str | Path | None = None) -> Path:
        return data_root(root) / self.minari_id


def parse(dataset_id: str, size: int | None = None) -> DatasetName:
    """`TASK-KIND[-SIZE]` or `offbench/TASK/KIND[-SIZE]-vN` -> DatasetName.

    `size` (if given) overrides the size in the id."""
    text = dataset_id
    if text.startswith(f"{NAMESPACE}/"):
        parts = text.split("/")
        if len(parts) != 3:
            raise ValueError(f"bad dataset id '{dataset_id}'; expected {NAMESPACE}/TASK/KIND-v0")
        kind_and_size = re.sub(r"-v\d+$", "", parts[2])
        text = f"{parts[1]}-{kind_and_size}"
    tasks = sorted(envs.task_names(), key=len, reverse=True)
    task = next((t for t in tasks if text == t or text.startswith(t + "-")), None)
    if task is None:
        raise ValueError(f"unknown dataset '{dataset_id}': it must start with a task "
                         f"({', '.join(envs.task_names())}) followed by a kind "
                         f"({', '.join(KINDS)}), e.g. hopper-medium-replay; see "
                         "`offbench datasets list`")
    rest = text[len(task) + 1:]
    valid = kinds(task)
    default = default_kind(task)
    if default is not None and (rest == "" or re.fullmatch(r"\d+[km]?", rest.lower())):
        parsed = parse_size(rest) if rest else DEFAULT_SIZE
        return DatasetName(task, default, size if size is not None else parsed)
    for kind in sorted(valid, key=len, reverse=True):
        if rest == kind or rest.startswith(kind + "-"):
            suffix = rest[len(kind) + 1:]
            parsed = parse_size(suffix) if suffix else DEFAULT_SIZE
            return DatasetName(task, kind, size if size is not None else parsed)
    if not valid:
        raise ValueError(f"task '{task}' has no datasets yet; see `offbench datasets list`")
    raise ValueError(f"unknown dataset kind in '{dataset_id}': valid kinds are {', '.join(valid)}")
