"""Dataset names. Short ids `TASK-KIND[-SIZE]` (e.g. `hopper-medium-replay`, `ant-expert-100k`)
map to Minari ids `offbench/TASK/KIND[-SIZE]-v0`; the size suffix appears only when the size is
not the D4RL default of 1M transitions. Ids with a `/` are Minari ids (ours or any other).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import offbench.envs as envs

KINDS = ("random", "medium", "expert", "medium-expert", "medium-replay", "full-replay")
DEFAULT_SIZE = 1_000_000
NAMESPACE = "offbench"
VERSION = 0


def data_root(root: str | Path | None = None) -> Path:
    """Where datasets live: `root`, else $OFFBENCH_DATASETS, else ~/.offbench/datasets."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("OFFBENCH_DATASETS", Path.home() / ".offbench" / "datasets"))


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
        return f"{self.task}-{self.kind}{suffix}"

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
    task = next((t for t in tasks if text.startswith(t + "-")), None)
    if task is None:
        raise ValueError(f"unknown dataset '{dataset_id}': it must start with a task "
                         f"({', '.join(envs.task_names())}) followed by a kind "
                         f"({', '.join(KINDS)}), e.g. hopper-medium-replay; see "
                         "`offbench datasets list`")
    rest = text[len(task) + 1:]
    for kind in sorted(KINDS, key=len, reverse=True):
        if rest == kind or rest.startswith(kind + "-"):
            suffix = rest[len(kind) + 1:]
            parsed = parse_size(suffix) if suffix else DEFAULT_SIZE
            return DatasetName(task, kind, size if size is not None else parsed)
    raise ValueError(f"unknown dataset kind in '{dataset_id}': valid kinds are {', '.join(KINDS)}")
