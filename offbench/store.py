"""The results store: one folder per sweep cell, named by a hash of the cell's resolved config.

    STORE/cells/<ALGO>-<DATASET>-<MODE>-<HASH>/
        cell.json      the resolved config the hash is taken of (+ the sweeps that asked for it)
        status.json    {"state": "running" | "complete" | "failed", "error": ..., ...}
        settings.json, run.json, metrics.csv, checkpoints/   written by the training loop

The readable prefix is derived from the same config, so the name is still a pure function of
it: equal configs share a folder (several sweeps may share one store and reuse each other's
cells), and any change to the config gives another folder. Every file here is written
atomically (offbench.io: temp file, fsync, rename; Orbax stages checkpoints the same way), and
reports read only cells whose status is `complete`, which is written last, so a killed sweep
never leaves a half file that a report reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offbench.io import write_text_atomic

HASH_CHARS = 12
STATES = ("running", "complete", "failed")


def canonical_json(config: dict) -> str:
    """One text per config: sorted keys, no whitespace, tuples as lists, floats by repr."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot hash a value of type {type(value).__name__} in a cell config")


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:HASH_CHARS]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def cell_name(config: dict) -> str:
    """`ALGO-DATASET-MODE-HASH` (the prefix only for people reading a listing)."""
    prefix = "-".join(_slug(str(config.get(k, "?"))) for k in ("algorithm", "dataset", "mode"))
    return f"{prefix}-{config_hash(config)}"


@dataclass(frozen=True)
class CellDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> dict:
        return json.loads((self.path / "cell.json").read_text())["config"]

    def sweeps(self) -> list[str]:
        """Names of the sweeps that asked for this cell (recorded in cell.json)."""
        return json.loads((self.path / "cell.json").read_text()).get("sweeps", [])

    def status(self) -> dict:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.exists() else {"state": "missing"}

    @property
    def complete(self) -> bool:
        return self.status().get("state") == "complete"

    def set_status(self, state: str, **fields: Any) -> None:
        assert state in STATES, state
        write_text_atomic(self.path / "status.json",
                          json.dumps({"state": state, **fields}, indent=2, default=str))


class Store:
    """A folder of cells. Any number of sweeps may write into one store."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def cell(self, config: dict) -> CellDir:
        return CellDir(self.cells_dir / cell_name(config))

    def register(self, config: dict, sweep: str | None = None) -> CellDir:
        """The cell's folder with its cell.json (created, or the sweep's name added to it)."""
        cell = self.cell(config)
        path = cell.path / "cell.json"
        record = (json.loads(path.read_text()) if path.exists()
                  else {"hash": config_hash(config), "config": config, "sweeps": []})
        if record["config"] != json.loads(canonical_json(config)):
            # equal hashes of different configs: practically impossible, but never overwrite
            raise ValueError(f"{cell.path} holds a different config with the same hash")
        if sweep is not None and sweep not in record["sweeps"]:
            record["sweeps"].append(sweep)
        write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
        return cell

    def cells(self) -> Iterator[CellDir]:
        if not self.cells_dir.exists():
            return
        for path in sorted(self.cells_dir.iterdir()):
            if (path / "cell.json").exists():  # a folder without its record is not a cell
                yield CellDir(path)

    def complete_cells(self) -> list[CellDir]:
        return [c for c in self.cells() if c.complete]


def sweep_cells(store: Store, sweeps: list[str], label: str | None = None) -> list[CellDir]:
    """The cells the named sweeps ran; an error unless there are some and all are complete.
    label: how messages name the sweeps (default "sweep(s) [...]")."""
    label = label or f"sweep(s) {sweeps}"
    cells = [c for c in store.cells() if set(sweeps) & set(c.sweeps())]
    if not cells:
        raise ValueError(f"no cell of {label} in store {store.root}; run "
                         f"`offbench sweep SPEC --store {store.root}` first")
    unfinished = [c.name for c in cells if not c.complete]
    if unfinished:
        raise ValueError(f"{len(unfinished)} cell(s) of {label} have not finished "
                         f"(e.g. {unfinished[0]}); rerun the sweep with --resume")
    return cells
