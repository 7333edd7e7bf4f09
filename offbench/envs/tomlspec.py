"""A task spec dataclass built from its TOML table (tasks/*.toml), shared by the locomotion
(offbench/envs/spec.py) and navigation (offbench/envs/maze_spec.py) families."""

from __future__ import annotations

import dataclasses


def build(spec_class, name: str, raw: dict):
    """`spec_class(name=name, **raw)` with TOML lists as tuples; one error naming the fields
    the class does not have."""
    fields = {f.name for f in dataclasses.fields(spec_class)}
    unknown = set(raw) - fields
    if unknown:
        raise ValueError(f"task spec '{name}' has unknown fields {sorted(unknown)}; "
                         f"known fields: {sorted(fields - {'name'})}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return spec_class(name=name, **values)
