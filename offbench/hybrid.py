"""Hybrid sim-to-real task names: `DATASET@sim:KEY=VALUE,...`.

    halfcheetah-medium@sim:gravity=0.5
    hopper-medium-replay@sim:friction=0.8,mass.torso=1.5

The offline data come from the real task (DATASET, any dataset id `offbench run` accepts); the
agent's online interaction is with a simulator of the same task built with those dynamics
overrides (`offbench.envs.make(task, **overrides)`: scale factors of gravity, friction, body
masses, actuator gears; `mass.BODY` / `gear.ACTUATOR` scale one body or actuator); evaluation is
on the real task. This module is the one place such names are parsed and formatted.
"""

from __future__ import annotations

import dataclasses
import math

from offbench.envs import DYNAMICS_OVERRIDES

SIM_MARK = "@sim:"
NAMED = ("mass", "gear")  # overrides that may name one body / actuator


@dataclasses.dataclass(frozen=True)
class HybridTask:
    """A real dataset and the simulator's overrides as (key, value) pairs, sorted by key."""

    dataset: str
    sim: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        return format_name(self)

    def overrides(self) -> dict:
        """The overrides as `envs.make` takes them: {"gravity": 0.5, "mass": {"torso": 1.5}}."""
        out: dict = {}
        for key, value in self.sim:
            base, _, part = key.partition(".")
            if part:
                out.setdefault(base, {})[part] = value
            else:
                out[base] = value
        return out


def _bad(name: str, why: str) -> ValueError:
    return ValueError(f"bad hybrid task '{name}': {why}; expected DATASET{SIM_MARK}KEY=VALUE,... "
                      f"with KEY in {list(DYNAMICS_OVERRIDES)} (or mass.BODY, gear.ACTUATOR) and "
                      f"VALUE a positive scale, e.g. halfcheetah-medium{SIM_MARK}gravity=0.5")


def parse(name: str) -> HybridTask:
    """`DATASET@sim:k=v,...` -> HybridTask; one ValueError naming the problem otherwise."""
    dataset, mark, spec = name.partition(SIM_MARK)
    if not mark:
        raise _bad(name, f"no '{SIM_MARK}' part")
    if not dataset or "@" in dataset:
        raise _bad(name, "the dataset id before '@sim:' is missing or has an '@'")
    if not spec:
        raise _bad(name, "no overrides after '@sim:'")
    pairs: dict[str, float] = {}
    for item in spec.split(","):
        key, eq, raw = item.strip().partition("=")
        base, dot, part = key.partition(".")
        if not eq or not key:
            raise _bad(name, f"'{item}' is not KEY=VALUE")
        if base not in DYNAMICS_OVERRIDES:
            raise _bad(name, f"unknown override '{base}'")
        if dot and (base not in NAMED or not part):
            raise _bad(name, f"'{key}': only {list(NAMED)} take a .NAME")
        try:
            value = float(raw)
        except ValueError:
            raise _bad(name, f"'{raw}' (for {key}) is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise _bad(name, f"{key}={raw} is not a positive finite scale")
        if key in pairs:
            raise _bad(name, f"'{key}' given twice")
        pairs[key] = value
    for base in NAMED:  # a uniform scale and a per-name one would silently compete
        if base in pairs and any(k.startswith(base + ".") for k in pairs):
            raise _bad(name, f"'{base}' given both for all and for one name")
    return HybridTask(dataset, tuple(sorted(pairs.items())))


def format_name(task: HybridTask) -> str:
    """The canonical name (keys sorted, shortest float repr): parse(format_name(t)) == t."""
    return task.dataset + SIM_MARK + ",".join(f"{k}={v!r}" for k, v in task.sim)


def split(dataset_id: str) -> tuple[str, dict | None]:
    """(dataset id, simulator overrides or None) of a plain or hybrid dataset id."""
    if "@" not in dataset_id:
        return dataset_id, None
    task = parse(dataset_id)
    return task.dataset, task.overrides()
