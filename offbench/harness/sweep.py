"""Sweeps: a TOML spec expands to cells (algorithm x dataset x mode x budget x hyperparameter
variant); each cell trains all its seeds vmapped in one program and lands in the results store.

A spec (see tasks/sweeps/*.toml)::

    name = "tiny"                 # recorded in every cell it asks for
    profile = "cpu"               # reports never mix profiles in one table
    algorithms = ["bc", "td3_bc"]
    datasets = ["hopper-medium-replay-100k"]
    modes = ["offline"]           # default ["offline"]
    seeds = 3                     # vmapped in one program; first_seed = 0 by default
    set = ["hidden=64,64"]        # overrides for every algorithm whose Config has the key
    sinks = ["tensorboard"]       # optional logging sinks besides metrics.csv

    [budget]                      # or [[budgets]] for several budgets (one cell each)
    updates = 20000
    eval_every = 5000
    eval_episodes = 5

    [algorithms_set.iql]          # per-algorithm overrides (strict: unknown keys are errors)
    set = ["expectile=0.7"]
    grid = { beta = ["3.0", "10.0"] }   # one cell per combination

    [algorithms_set.rebrac.datasets]    # per-dataset overrides, by the dataset's exact id,
                                        # else by TASK-KIND (any size, any variant)
    "hopper-medium-replay" = ["actor_bc_coef=0.05", "critic_bc_coef=0.5"]

A cell's identity is its resolved config: algorithm (and the module it loads), dataset (and a
hash of its content record when offbench built it), mode,
the mode's resolved budget, the algorithm's full resolved Config, seeds, first seed, profile.
Sinks and the spec's name are not part of it (they do not change the numbers).

What a cell is and how one runs (the modes, `run_cell`) is offbench/harness/cells.py.
Executors (`run_sweep(executor=...)`): "local" runs the cells one after another in this
process; "ray" runs each cell as one Ray task (offbench/harness/ray_executor.py). Both run a
cell with `cells.run_cell`, so a store does not depend on which executor filled it.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offbench.harness.cells import Cell, SweepResult, get_mode, resolve, run_cell
from offbench.harness.store import Store

if TYPE_CHECKING:
    from offbench.harness.ray_executor import RayOptions

SPEC_KEYS = {"name", "profile", "description", "algorithms", "datasets", "modes", "seeds",
             "first_seed", "set", "budget", "budgets", "algorithms_set", "sinks", "backend",
             "report", "needs"}  # report, needs: offbench/reports/declared.py


# ---- spec -> cells ------------------------------------------------------------------------

def load_spec(path: Path | str) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sweep spec {path} does not exist")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep spec {path} is not valid TOML: {err}") from None
    spec.setdefault("name", path.stem)
    return spec


def _as_list(value: Any, key: str) -> list:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"sweep spec: '{key}' must be a non-empty list")
    return value


def dataset_key(dataset: str) -> str:
    """`TASK-KIND` of an offbench dataset id (any size or Minari form), else the id itself."""
    from offbench import data
    from offbench.data import transforms

    base = transforms.split(dataset).base  # a variant takes its base's per-dataset settings
    try:
        name = data.parse(base)
    except ValueError:
        return base
    return f"{name.task}-{name.kind}"


def _has_key(config: Any, item: str) -> bool:
    return item.partition("=")[0] in {f.name for f in dataclasses.fields(config)}


def expand(spec: dict, log: Callable[[str], None] = print) -> list[Cell]:
    """Every cell of a spec, resolved (algorithm configs with overrides, budgets validated).
    Raises ValueError on a malformed spec before anything runs."""
    from offbench.algorithms import load_algorithm
    from offbench.data.builder import dataset_fingerprint

    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"sweep spec: unknown keys {sorted(unknown)}; valid: {sorted(SPEC_KEYS)}")
    for key in ("algorithms", "datasets", "profile"):
        if key not in spec:
            raise ValueError(f"sweep spec '{spec.get('name')}' needs '{key}'")
    algorithms = _as_list(spec["algorithms"], "algorithms")
    datasets = _as_list(spec["datasets"], "datasets")
    from offbench.data import transforms

    for dataset in datasets:  # a bad +transform is one error here, not in its cell
        transforms.split(dataset)
    modes = _as_list(spec.get("modes", ["offline"]), "modes")
    for name in modes:  # a misspelt mode fails here, not as "no cell to run"
        get_mode(name)
    for mode in modes:
        get_mode(mode)
    if "budget" in spec and "budgets" in spec:
        raise ValueError("sweep spec: give either [budget] or [[budgets]], not both")
    budgets = spec.get("budgets") or [spec.get("budget", {})]
    from offbench.envs import BACKENDS
    from offbench.harness.sinks import SINKS

    sinks = spec.get("sinks", [])
    unknown_sinks = sorted(({sinks} if isinstance(sinks, str) else set(sinks)) - set(SINKS))
    if unknown_sinks:
        raise ValueError(f"sweep spec: unknown logging sinks {unknown_sinks}; valid: "
                         f"{list(SINKS)} (metrics.csv is always written)")
    if spec.get("backend") not in (None, *BACKENDS):
        raise ValueError(f"sweep spec: backend = {spec['backend']!r}; valid: {list(BACKENDS)}")
    seeds, first_seed = spec.get("seeds", 1), spec.get("first_seed", 0)
    for key, value, least in (("seeds", seeds, 1), ("first_seed", first_seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"sweep spec: {key} = {value!r}: expected a whole number >= {least}")
    shared_set = list(spec.get("set", []))
    per_algo = spec.get("algorithms_set", {})
    for name in per_algo:
        if name not in algorithms:
            raise ValueError(f"sweep spec: [algorithms_set.{name}] names an algorithm not in "
                             f"'algorithms' ({algorithms})")
    for item in shared_set:
        if not any(_has_key(load_algorithm(a).Config(), item) for a in algorithms):
            raise ValueError(f"sweep spec: set '{item}' matches no algorithm's Config field")
    cells: list[Cell] = []
    fingerprints: dict[str, str | None] = {}
    for algo_name in algorithms:
        algo = load_algorithm(algo_name)
        base = algo.Config()
        shared = [item for item in shared_set if _has_key(base, item)]
        own = per_algo.get(algo_name, {})
        strict = list(own.get("set", []))
        per_dataset = {k: list(v) for k, v in own.get("datasets", {}).items()}
        unknown = set(own) - {"set", "grid", "datasets"}
        if unknown:
            raise ValueError(f"sweep spec: [algorithms_set.{algo_name}] has unknown keys "
                             f"{sorted(unknown)}; valid: set, grid, datasets")
        grid = {k: [str(v) for v in _as_list(vals, f"grid.{k}")]
                for k, vals in own.get("grid", {}).items()}
        variants = [dict(zip(grid, combo, strict=True))
                    for combo in itertools.product(*grid.values())] or [{}]
        for mode_name, variant, budget_table, dataset in itertools.product(
                modes, variants, budgets, datasets):
            if mode_name not in algo.MODES:
                log(f"skipped: {algo_name} does not declare mode '{mode_name}' "
                    f"(its modes: {list(algo.MODES)})")
                continue
            own_dataset = per_dataset.get(dataset, per_dataset.get(dataset_key(dataset), []))
            items = (shared + strict + own_dataset
                     + [f"{k}={v}" for k, v in variant.items()])
            config = resolve(
                algo_name, dataset, mode_name, items=items, variant=variant,
                budget=budget_table, backend=spec.get("backend"), seeds=seeds,
                first_seed=first_seed, profile=str(spec["profile"]),
                fingerprint=fingerprints.setdefault(dataset, dataset_fingerprint(dataset)))
            cells.append(Cell(config, tuple(spec.get("sinks", ()))))
    if not cells:
        raise ValueError(f"sweep spec '{spec.get('name')}' has no cell to run")
    return cells


# ---- executor -----------------------------------------------------------------------------

def _ensure_datasets(datasets: list[str], log: Callable[[str], None]) -> None:
    """Build offbench datasets the cells need (a no-op for built ones); other ids (Minari's)
    must already exist and fail in their cell if they do not."""
    from offbench import data
    from offbench.data import transforms

    needed = set()
    for dataset in datasets:  # a variant needs its base and the kinds it mixes in
        variant = transforms.split(dataset)
        needed.add(variant.base)
        try:
            base = data.parse(variant.base)
        except ValueError:
            continue
        needed |= {data.DatasetName(base.task, k, base.size).short for k in variant.mixed_kinds}
    for dataset in sorted(needed):
        try:
            name = data.parse(dataset)
        except ValueError:
            continue
        if not name.path().exists():
            log(f"building dataset {name.short}")
        # an existing one is kept, or rebuilt if tasks/policies changed since it was built;
        # one offbench cannot vouch for (other seed, no sidecar) is used as it is: the cells
        # record its content hash
        try:
            data.build(name, log=log)
        except FileExistsError:
            log(f"{name.short}: using the existing {name.path()} as it is")


def run_sweep(spec: dict, store: Store, resume: bool = False, log: Callable[[str], None] = print,
              build_datasets: bool = True, executor: str = "local",
              after_cell: Callable[[int], None] | None = None,
              ray_options: RayOptions | None = None,
              seed_group: int | None = None) -> SweepResult:
    """Run every cell of `spec` into `store`. Complete cells (of this sweep or of any other
    sharing the store) are skipped; unfinished ones (killed or failed) are continued only with
    `resume`. A cell that raises is recorded as failed (error and traceback in its status.json)
    and the sweep goes on. `executor`: "local" runs the cells one after another in this
    process; "ray" sends each to a Ray cluster as one task (offbench/ray_executor.py; where
    and with which resources: `ray_options`), into the same store folders. seed_group: each
    cell's seeds in vmapped groups of that size (driver.map_seeds; a CPU speed knob, not part
    of a cell's identity: it changes results only to float rounding). after_cell: called
    with the number of cells handled after each one (local executor; tests end the process
    there to check a killed sweep's resume)."""
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor '{executor}'; use 'local' or 'ray'")
    if executor == "ray":  # before anything is built or written
        from offbench.harness import ray_executor

        ray_executor.check_installed()
        if after_cell is not None:
            raise ValueError("after_cell is a hook of the local executor")
    expand(spec, lambda *_: None)  # a malformed spec fails here, before anything is written
    if build_datasets:  # first, so that every cell's config holds its dataset's fingerprint
        _ensure_datasets(_as_list(spec.get("datasets", []), "datasets"), log)
    cells = [dataclasses.replace(c, seed_group=seed_group) for c in expand(spec, log)]
    if not resume:  # complete cells are reused either way; unfinished ones need a decision
        unfinished = [store.cell(c.config) for c in cells]
        unfinished = [f"{c.name} ({c.status().get('state')})" for c in unfinished
                      if c.path.exists() and not c.complete]
        if unfinished:
            raise ValueError(f"{len(unfinished)} cell(s) of this sweep were started before and "
                             f"did not complete in {store.root} (e.g. {unfinished[0]}); pass "
                             "--resume to continue them from their checkpoints")
    if executor == "ray":
        return ray_executor.run_cells(cells, store, spec["name"], resume,
                                      ray_options or ray_executor.RayOptions(), log)
    result = SweepResult([], [], {})
    for index, cell in enumerate(cells):
        folder = store.register(cell.config, spec["name"])
        if folder.complete:
            log(f"[{index + 1}/{len(cells)}] complete, skipped: {cell.label}")
            result.skipped.append(folder.name)
            continue
        log(f"[{index + 1}/{len(cells)}] running: {cell.label} -> {folder.path}")
        error = run_cell(cell, folder, resume=resume, log=log)
        if error is None:
            result.ran.append(folder.name)
        else:
            log(f"    FAILED: {error}")
            result.failed[folder.name] = error
        if after_cell is not None:
            after_cell(index + 1)
    return result
