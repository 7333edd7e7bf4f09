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

import contextlib
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offbench.io import canonical_json, config_hash, write_text_atomic

STATES = ("running", "complete", "failed")


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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) on `path`, held for the block."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
        """The cell's folder with its cell.json (created, or the sweep's name added to it).
        The read-modify-write of cell.json holds an exclusive lock on the cell's `.lock` file,
        so sweeps registering the same cell at once (processes on this machine, or Ray workers
        on a filesystem with POSIX locks) keep every sweep name."""
        cell = self.cell(config)
        path = cell.path / "cell.json"
        cell.path.mkdir(parents=True, exist_ok=True)
        with _locked(cell.path / ".lock"):
            record = (json.loads(path.read_text()) if path.exists()
                      else {"hash": config_hash(config), "config": config, "sweeps": []})
            if record["config"] != json.loads(canonical_json(config)):
                # equal hashes of different configs: practically impossible; never overwrite
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


def sweep_cells(store: Store, sweeps: list[str], label: str | None = None,
                log: Callable[[str], None] = print,
                datasets: Collection[str] | None = None,
                only: Collection[str] | None = None) -> list[CellDir]:
    """The cells the named sweeps ran; an error unless there are some and all are complete.
    datasets: only those datasets' cells, chosen before the completeness check (an unfinished
    cell of another dataset does not block a report of the finished ones).
    A dataset rebuilt from re-selected behaviour policies keeps its id, so a sweep run before
    and after holds cells of both versions: only the current version's are returned (the
    others are named in the log), and a mix with no current version to pick is an error.
    label: how messages name the sweeps (default "sweep(s) [...]").
    only: the names of the cells the sweeps' specs ask for now (`offbench sweep --report`): a
    cell the sweep ran under an earlier version of its spec (other seeds or settings) is left
    out, and named in the log."""
    from offbench.data.builder import dataset_fingerprint

    label = label or f"sweep(s) {sweeps}"
    cells = [c for c in store.cells() if set(sweeps) & set(c.sweeps())]
    if only is not None:
        stale = [c.name for c in cells if c.name not in only]
        if stale:
            log(f"{label}: {len(stale)} cell(s) its spec no longer asks for left out "
                f"(e.g. {stale[0]})")
        cells = [c for c in cells if c.name in only]
    if not cells:
        raise ValueError(f"no cell of {label} in store {store.root}; run "
                         f"`offbench sweep SPEC --store {store.root}` first")
    by_dataset: dict[str, list[CellDir]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.config()["dataset"], []).append(cell)
    if datasets:
        if set(datasets) - set(by_dataset):
            raise ValueError(f"--datasets {sorted(set(datasets) - set(by_dataset))}: no cell of "
                             f"{label} has them (they have {sorted(by_dataset)})")
        by_dataset = {d: group for d, group in by_dataset.items() if d in datasets}
    kept: list[CellDir] = []
    for dataset, group in by_dataset.items():
        versions = {c.config().get("dataset_sha256") for c in group}
        if len(versions) > 1:
            current = dataset_fingerprint(dataset)
            if current not in versions:
                raise ValueError(
                    f"{label} holds cells of {len(versions)} versions of dataset {dataset} and "
                    "none is the dataset now on disk; build it (`offbench datasets build`) and "
                    "rerun the sweep with --resume, or move the old cells out of the store")
            old = [c.name for c in group if c.config().get("dataset_sha256") != current]
            log(f"{label}: {len(old)} cell(s) of an older version of {dataset} left out "
                f"(e.g. {old[0]})")
            group = [c for c in group if c.config().get("dataset_sha256") == current]
        kept.extend(group)
    unfinished = [c.name for c in kept if not c.complete]
    if unfinished:
        raise ValueError(f"{len(unfinished)} cell(s) of {label} have not finished "
                         f"(e.g. {unfinished[0]}); rerun the sweep with --resume")
    return kept


def check_store(store: Store) -> list[tuple[str, str, str]]:
    """Every cell folder's files checked: (cell, what is wrong, the command that repairs or
    reruns it); an empty list for a healthy store. Checks that cell.json parses and its config
    hashes to the folder's name, the status, and for a complete cell its metrics.csv (every
    seed, the budget's evaluations), run.json (per-seed results) and checkpoints."""
    import pandas as pd

    problems: list[tuple[str, str, str]] = []
    if not store.cells_dir.is_dir():
        raise ValueError(f"{store.root} is not a results store (no cells/ folder)")
    for path in sorted(p for p in store.cells_dir.iterdir() if p.is_dir()):
        cell, name = CellDir(path), path.name
        remove = f"rm -r {path}  (nothing a report reads)"
        try:
            record = json.loads((path / "cell.json").read_text())
            config = record["config"]
        except (OSError, ValueError, KeyError) as err:
            problems.append((name, f"cell.json missing or unreadable ({type(err).__name__})",
                             remove))
            continue
        rerun = (f"offbench sweep SPEC --resume  (the spec of sweep(s) {record.get('sweeps')})"
                 if record.get("sweeps") else "rerun its sweep with --resume")
        if cell_name(config) != name:
            problems.append((name, f"config hashes to {cell_name(config)}, not the folder's "
                                   "name (edited by hand?)", remove))
            continue
        try:
            state = cell.status().get("state")
        except ValueError:
            problems.append((name, "status.json unreadable", rerun))
            continue
        if state != "complete":
            problems.append((name, f"not complete (state: {state})", rerun))
            continue
        try:
            info = json.loads((path / "run.json").read_text())
            metrics = pd.read_csv(path / "metrics.csv")
        except (OSError, ValueError) as err:
            problems.append((name, f"complete but run.json or metrics.csv unreadable "
                                   f"({type(err).__name__})", rerun))
            continue
        seeds = set(range(config["first_seed"], config["first_seed"] + config["seeds"]))
        if set(metrics.get("seed", [])) != seeds or set(map(int, info.get("per_seed", {}))) \
                != seeds:
            problems.append((name, "complete but metrics.csv or run.json lack seeds "
                                   f"(expected {sorted(seeds)})", rerun))
            continue
        periods = metrics.groupby("seed").period.nunique()
        steps = sorted(int(p.name) for p in (path / "checkpoints").glob("[0-9]*")) \
            if (path / "checkpoints").is_dir() else []
        if periods.nunique() != 1 or not steps or steps[-1] != int(periods.iloc[0]):
            problems.append((name, f"complete but metrics.csv ({periods.max()} evaluations) "
                                   f"and checkpoints (last {steps[-1] if steps else None}) "
                                   "disagree", rerun))
    return problems
