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

Spec schema (checked in full by `validate` before any cell runs or any file is written; one
SpecError lists every problem as `FIELD.PATH = GIVEN: what is accepted`):

    key                  type                      default        accepted
    name                 string                    file stem      non-empty
    profile              string                    (required)     non-empty (reports never mix)
    description          string                    -              non-empty
    algorithms           string or list of strings (required)     baselines/ names, dotted module
                                                                  paths, .py files (each loaded)
    datasets             string or list of strings (required)     TASK-KIND[-SIZE][+TRANSFORM...]
                                                                  (offbench/data/transforms.py),
                                                                  a Minari id on this machine,
                                                                  DATASET@sim:KEY=VALUE,... (o2o,
                                                                  hybrid; offbench/hybrid.py)
    modes                string or list of strings ["offline"]    registered modes (offline, o2o,
                                                                  hybrid, cells.register_mode)
    seeds                integer                   1              >= 1 (not a float, not a bool)
    first_seed           integer                   0              >= 0
    set                  list of "KEY=VALUE"       []             KEY a Config field of at least
                                                                  one algorithm, VALUE of its type
    budget               table                     {}             the mode's budget keys with
                                                                  their types (offline:
                                                                  OfflineConfig; o2o, hybrid:
                                                                  MixedConfig)
    budgets              array of tables           -              each as `budget`; not both
    algorithms_set.ALGO  table: set, grid,         -              ALGO one of `algorithms`
                         datasets
      .set               list of "KEY=VALUE"       []             KEY a field of ALGO's Config
      .grid              table KEY = [VALUE, ...]  {}             non-empty lists; one cell per
                                                                  combination
      .datasets.ID       list of "KEY=VALUE"       -              ID a dataset id or TASK-KIND
    sinks                string or list of strings []             tensorboard, wandb (sinks.SINKS)
    backend              string                    by device      mujoco, mjx (envs.BACKENDS)
    report               [[report]] tables         -              offbench/reports/declared.py
                                                                  (declared.parse)
    needs                list of spec files        []             files beside the spec
                                                                  (declared.needs); a bench
                                                                  profile's other sections
    notes                string                    -              bench profiles: the paragraph
                                                                  under the leaderboard's header
                                                                  (what the profile leaves out)

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
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offbench.harness.cells import Cell, SweepResult, resolve, run_cell
from offbench.harness.store import Store

if TYPE_CHECKING:
    from offbench.harness.ray_executor import RayOptions

SPEC_KEYS = {"name", "profile", "description", "algorithms", "datasets", "modes", "seeds",
             "first_seed", "set", "budget", "budgets", "algorithms_set", "sinks", "backend",
             "report", "needs", "notes"}  # report, needs: offbench/reports/declared.py


# ---- the spec schema ------------------------------------------------------------------------

class SpecError(ValueError):
    """A spec that cannot run: every problem found, each `FIELD.PATH: what was given; what is
    accepted`, in one error (raised before any cell runs or any file is written)."""

    def __init__(self, name: Any, problems: list[str]):
        self.problems = problems
        super().__init__(f"sweep spec {name!r}: {len(problems)} problem(s), nothing was run or "
                         "written; fix the spec (schema: offbench/harness/sweep.py):\n  - "
                         + "\n  - ".join(problems))


def _names(value: Any) -> list | None:
    """A list of strings from a string or a non-empty list of strings; None otherwise."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _items(value: Any) -> list | None:
    """A list of KEY=VALUE strings (may be empty); None otherwise."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dataset_problem(dataset: str, present: bool) -> str | None:
    """Why a dataset id cannot be resolved, or None: a bad hybrid `@sim:` part or transform, an
    offbench id that names no task or kind, with `present` a Minari id not downloaded here."""
    from offbench import data, hybrid
    from offbench.data import loader, transforms

    try:
        base = transforms.split(hybrid.split(dataset)[0]).base
    except ValueError as err:
        return str(err)
    if "/" in base and not base.startswith(f"{data.ids.NAMESPACE}/"):
        if present and not (loader.minari_root() / base / "data").exists():
            return (f"no Minari dataset '{base}' in {loader.minari_root()}; download it with "
                    f"`minari download {base}` (or set MINARI_DATASETS_PATH)")
        return None
    try:
        data.parse(base)
    except ValueError as err:
        return str(err)
    return None


def validate(spec: dict, path: Path | str | None = None, datasets_present: bool = True) -> None:
    """Check a spec against the schema in this module's docstring and resolve every name in it
    (algorithms, datasets and their transforms, tasks, modes, backend, sinks, config keys and
    values per algorithm, budget keys and values per mode, [[report]] tables, `needs`). Raises
    one SpecError listing every problem; writes nothing. `path`: the spec's file, to resolve
    `needs` beside it (without it only their form is checked). datasets_present: also require
    the Minari datasets it names (not offbench's: a sweep builds those) to be on this machine
    (`expand` leaves that to `run_sweep`: a spec's cells are the same wherever it expands)."""
    from offbench.algorithms import apply_overrides, load_algorithm
    from offbench.envs import BACKENDS
    from offbench.harness.cells import MODES
    from offbench.harness.sinks import SINKS
    from offbench.reports import declared

    problems: list[str] = []
    add = problems.append
    for key in sorted(set(spec) - SPEC_KEYS):
        add(f"{key}: unknown keys ['{key}'] (given {spec[key]!r}); valid: {sorted(SPEC_KEYS)}")
    for key in ("name", "profile", "description", "notes"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            add(f"{key} = {spec[key]!r}: expected a non-empty string")
    for key in ("algorithms", "datasets", "profile"):
        if key not in spec:
            add(f"{key}: missing (required)")
    algorithms = _names(spec.get("algorithms")) or []
    if "algorithms" in spec and not algorithms:
        add(f"algorithms = {spec['algorithms']!r}: expected a non-empty list of algorithm names "
            "(baselines/ names, dotted module paths or .py files)")
    modules: dict[str, Any] = {}
    for i, name in enumerate(algorithms):
        try:
            modules[name] = load_algorithm(name)
        except Exception as err:  # noqa: BLE001 - any import failure is the spec's problem here
            add(f"algorithms[{i}] = {name!r}: {err}")
    datasets = _names(spec.get("datasets")) or []
    if "datasets" in spec and not datasets:
        add(f"datasets = {spec['datasets']!r}: expected a non-empty list of dataset ids "
            "(TASK-KIND[-SIZE][+TRANSFORM...], a Minari id, or DATASET@sim:KEY=VALUE,...)")
    for i, dataset in enumerate(datasets):
        why = _dataset_problem(dataset, datasets_present)
        if why:
            add(f"datasets[{i}] = {dataset!r}: {why}")
    modes = _names(spec.get("modes", ["offline"]))
    if modes is None:
        add(f"modes = {spec['modes']!r}: expected a non-empty list of mode names "
            f"({sorted(MODES)})")
        modes = []
    for i, mode in enumerate(modes):
        if mode not in MODES:
            add(f"modes[{i}] = {mode!r}: mode '{mode}' has no runner here; registered modes: "
                f"{sorted(MODES)}")
    modes = [m for m in modes if m in MODES]
    for key, least in (("seeds", 1), ("first_seed", 0)):
        value = spec.get(key, least)
        if not _whole(value) or value < least:
            add(f"{key} = {value!r}: expected a whole number >= {least}")
    sinks = spec.get("sinks", [])
    sink_names = _names(sinks) if sinks != [] else []
    if sink_names is None:
        add(f"sinks = {sinks!r}: expected a list of sink names {list(SINKS)}")
    elif set(sink_names) - set(SINKS):
        add(f"sinks = {sinks!r}: unknown logging sinks {sorted(set(sink_names) - set(SINKS))}; "
            f"valid: {list(SINKS)} (metrics.csv is always written)")
    backend = spec.get("backend")
    if backend not in (None, *BACKENDS):
        add(f"backend = {backend!r}; valid: {list(BACKENDS)} (default: by device)")
        backend = None
    shared = _items(spec.get("set", []))
    if shared is None:
        add(f"set = {spec['set']!r}: expected a list of 'KEY=VALUE' strings")
        shared = []
    for i, item in enumerate(shared):
        owners = [m for m in modules.values() if _has_key(m.Config(), item)]
        if not owners:
            add(f"set[{i}] = {item!r}: matches no algorithm's Config field (algorithms: "
                f"{algorithms})")
        for module in owners:
            try:
                apply_overrides(module.Config(), [item])
            except ValueError as err:
                add(f"set[{i}] = {item!r}: {err}")
    per_algo = spec.get("algorithms_set", {})
    strict: dict[str, list[str]] = {}
    if not isinstance(per_algo, dict):
        add(f"algorithms_set = {per_algo!r}: expected tables [algorithms_set.ALGO]")
        per_algo = {}
    for name, own in per_algo.items():
        where = f"algorithms_set.{name}"
        if name not in algorithms:
            add(f"{where}: names an algorithm not in 'algorithms' ({algorithms})")
            continue
        if not isinstance(own, dict):
            add(f"{where} = {own!r}: expected a table with set, grid, datasets")
            continue
        for key in sorted(set(own) - {"set", "grid", "datasets"}):
            add(f"{where}.{key}: unknown keys ['{key}']; valid: set, grid, datasets")
        config = modules[name].Config() if name in modules else None
        entries = []
        items = _items(own.get("set", []))
        if items is None:
            add(f"{where}.set = {own['set']!r}: expected a list of 'KEY=VALUE' strings")
        else:
            entries += [(f"{where}.set[{i}]", item) for i, item in enumerate(items)]
            strict[name] = items
        grid = own.get("grid", {})
        if not isinstance(grid, dict):
            add(f"{where}.grid = {grid!r}: expected a table KEY = [VALUE, ...]")
            grid = {}
        for key, values in grid.items():
            if isinstance(values, str | int | float) and not isinstance(values, bool):
                values = [values]
            if not isinstance(values, list) or not values:
                add(f"{where}.grid.{key} = {values!r}: expected a non-empty list of values")
                continue
            entries += [(f"{where}.grid.{key}[{i}]", f"{key}={v}") for i, v in enumerate(values)]
        per_dataset = own.get("datasets", {})
        if not isinstance(per_dataset, dict):
            add(f"{where}.datasets = {per_dataset!r}: expected a table DATASET = ['KEY=VALUE']")
            per_dataset = {}
        for key, values in per_dataset.items():
            items = _items(values)
            if items is None:
                add(f"{where}.datasets.{key} = {values!r}: expected a list of 'KEY=VALUE' "
                    "strings")
                continue
            entries += [(f"{where}.datasets.{key}[{i}]", item) for i, item in enumerate(items)]
        for field, item in entries if config is not None else []:
            try:
                apply_overrides(config, [item])
            except ValueError as err:
                add(f"{field} = {item!r}: {err}")
    if "budget" in spec and "budgets" in spec:
        add("budget, budgets: give either [budget] or [[budgets]], not both")
    if "budgets" in spec:
        budgets = spec["budgets"]
        if not (isinstance(budgets, list) and budgets
                and all(isinstance(b, dict) for b in budgets)):
            add(f"budgets = {budgets!r}: expected an array of tables [[budgets]]")
            budgets = []
        tables = [(f"budgets[{i}]", b) for i, b in enumerate(budgets)]
    else:
        budget = spec.get("budget", {})
        if not isinstance(budget, dict):
            add(f"budget = {budget!r}: expected a table [budget]")
            budget = {}
        tables = [("budget", budget)]
    checked: set[tuple[str, str]] = set()
    for name, module in modules.items():  # each mode's budget keys and values, as it resolves
        try:
            config = apply_overrides(module.Config(), [i for i in shared if _has_key(
                module.Config(), i)] + strict.get(name, []))
        except ValueError:  # reported above; the budget is still checked, against the defaults
            config = module.Config()
        for mode, (where, table) in itertools.product(modes, tables):
            if mode not in module.MODES or (mode, where) in checked:
                continue
            checked.add((mode, where))
            try:
                MODES[mode].resolve_budget({**({"backend": backend} if backend else {}),
                                            **table}, config)
            except ValueError as err:  # check_budget's problems joined by "; ", one each
                for part in re.split(r"; (?=unknown |\w+ budget )", str(err)):
                    add(f"{where}: {part}")
    try:
        declared.parse(spec)
    except ValueError as err:  # its problems one by one, each already named report[i].FIELD
        head, *lines = str(err).split("\n  ")
        problems.extend(lines or [f"report: {head}"])
    if "needs" in spec:
        try:
            if path is not None:
                declared.needs(spec, Path(path))
            elif _names(spec["needs"]) is None:
                raise ValueError("'needs' must be a list of spec files")
        except ValueError as err:
            add(f"needs = {spec['needs']!r}: {err}")
    if problems:
        raise SpecError(spec.get("name"), problems)


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


def with_needs(spec_path: Path) -> list[tuple[Path, dict]]:
    """(path, spec) of the spec and of each spec it needs (offbench/reports/declared.py
    `needs`), in that order: a bench profile and its sections."""
    from offbench.reports import declared

    spec = load_spec(spec_path)
    return [(spec_path, spec), *((p, load_spec(p)) for p in declared.needs(spec, spec_path))]


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
    return data.DatasetName(name.task, name.kind).short  # pointmaze-umaze: its kind is implied


def _has_key(config: Any, item: str) -> bool:
    return item.partition("=")[0] in {f.name for f in dataclasses.fields(config)}


def expand(spec: dict, log: Callable[[str], None] = print) -> list[Cell]:
    """Every cell of a spec, resolved (algorithm configs with overrides, budgets validated).
    Raises one SpecError (a ValueError) listing every problem of a malformed spec (`validate`,
    then any combination that does not resolve) before anything runs."""
    from offbench.algorithms import load_algorithm
    from offbench.data.builder import dataset_fingerprint

    validate(spec, datasets_present=False)  # every problem in one error, before any resolving
    algorithms = _as_list(spec["algorithms"], "algorithms")
    datasets = _as_list(spec["datasets"], "datasets")
    modes = _as_list(spec.get("modes", ["offline"]), "modes")
    budgets = spec.get("budgets") or [spec.get("budget", {})]
    seeds, first_seed = spec.get("seeds", 1), spec.get("first_seed", 0)
    shared_set = list(spec.get("set", []))
    per_algo = spec.get("algorithms_set", {})
    sinks = tuple(_names(spec.get("sinks")) or ())
    problems: list[str] = []
    cells: list[Cell] = []
    fingerprints: dict[str, str | None] = {}
    for algo_name in algorithms:
        algo = load_algorithm(algo_name)
        base = algo.Config()
        shared = [item for item in shared_set if _has_key(base, item)]
        own = per_algo.get(algo_name, {})
        strict = list(own.get("set", []))
        per_dataset = {k: list(v) for k, v in own.get("datasets", {}).items()}
        grid = {k: [str(v) for v in (vals if isinstance(vals, list) else [vals])]
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
            try:
                config = resolve(
                    algo_name, dataset, mode_name, items=items, variant=variant,
                    budget=budget_table, backend=spec.get("backend"), seeds=seeds,
                    first_seed=first_seed, profile=str(spec["profile"]),
                    fingerprint=fingerprints.setdefault(dataset, dataset_fingerprint(dataset)))
            except ValueError as err:  # a combination that cannot run (e.g. DATASET@sim offline)
                problem = f"datasets: {dataset!r} with {algo_name} in mode {mode_name}: {err}"
                if problem not in problems:
                    problems.append(problem)
                continue
            cells.append(Cell(config, sinks))
    if problems:
        raise SpecError(spec.get("name"), problems)
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
              seed_group: int | str | None = None) -> SweepResult:
    """Run every cell of `spec` into `store`. Complete cells (of this sweep or of any other
    sharing the store) are skipped; unfinished ones (killed or failed) are continued only with
    `resume`. A cell that raises is recorded as failed (error and traceback in its status.json)
    and the sweep goes on. `executor`: "local" runs the cells one after another in this
    process; "ray" sends each to a Ray cluster as one task (offbench/ray_executor.py; where
    and with which resources: `ray_options`), into the same store folders. seed_group: each
    cell's seeds in vmapped groups of that size (driver.map_seeds; a CPU speed knob, not part
    of a cell's identity: it changes results only to float rounding; "auto": per algorithm,
    offbench/harness/seedgroup.py, on this process's device kind). after_cell: called
    with the number of cells handled after each one (local executor; tests end the process
    there to check a killed sweep's resume)."""
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor '{executor}'; use 'local' or 'ray'")
    if executor == "ray":  # before anything is built or written
        from offbench.harness import ray_executor

        ray_executor.check_installed()
        if after_cell is not None:
            raise ValueError("after_cell is a hook of the local executor")
    validate(spec)  # a malformed spec or a missing dataset fails here, before anything is written
    expand(spec, lambda *_: None)  # and so does a combination that does not resolve
    if build_datasets:  # first, so that every cell's config holds its dataset's fingerprint
        _ensure_datasets(_as_list(spec.get("datasets", []), "datasets"), log)
    cells = expand(spec, log)
    if seed_group == "auto":  # per algorithm (offbench/harness/seedgroup.py)
        import jax

        from offbench.harness import seedgroup

        chosen = [seedgroup.choose("auto", c.config["algorithm"], c.config["seeds"],
                                   jax.default_backend()) for c in cells]
        for why in dict.fromkeys(f"{c.config['algorithm']}: {w}" for c, (_, w) in
                                 zip(cells, chosen, strict=True)):
            log(f"--seed-group {why}")
        cells = [dataclasses.replace(c, seed_group=g) for c, (g, _) in
                 zip(cells, chosen, strict=True)]
    else:
        cells = [dataclasses.replace(c, seed_group=seed_group) for c in cells]
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
