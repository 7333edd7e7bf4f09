"""Cells: what one unit of a sweep is (its resolved config), the modes that run one, and
`run_cell`, the one function every executor (local, Ray) calls to train a cell into its store
folder.

Modes dispatch through MODES: one `Mode` (resolve the budget, run a cell) per mode name:
offline (offbench/loops/offline.py), o2o and hybrid (one loop for both,
offbench/loops/o2o.py); another loop plugs in with `register_mode` without touching the sweep
machinery. A mode's `run` returns the per-seed metrics table and leaves in the cell folder what
`offbench run` leaves (metrics.csv, run.json with `per_seed` results, checkpoints); O2O/hybrid
metrics the leaderboard shows (reports/leaderboard.py section_table) go into `per_seed`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import time
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offbench.harness.store import CellDir
from offbench.io import canonical_json, write_bytes_atomic


@dataclasses.dataclass(frozen=True)
class Mode:
    """How a mode resolves a budget table into its loop config and runs one cell."""

    name: str
    resolve_budget: Callable[[dict, Any], dict]  # (budget table, algo config) -> budget dict
    # run(cell: Cell, out: Path, resume: bool, sinks: list) -> table; sinks: objects with
    # write(rows) (each chunk's rows, logging) and/or period(rows, progress) (progress lines)
    run: Callable[..., Any]
    # Adjust the algorithm config to the budget (e.g. IQL's schedule spans the run's updates).
    # (algo config, resolved budget, keys the spec set, algorithm module) -> algo config
    adjust_algo_config: Callable[[Any, dict, set, Any], Any] = (
        lambda config, budget, given, algo: config)


MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> None:
    MODES[mode.name] = mode


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"mode '{name}' has no runner here; registered modes: "
                         f"{sorted(MODES)}")
    return MODES[name]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: the resolved config (hashed into the store) and what runs it."""

    config: dict
    sinks: tuple[str, ...] = ()
    # --seed-group: seeds in vmapped groups (driver.map_seeds); a CPU speed knob that changes
    # results only to float rounding, so not in the config a cell is identified by
    seed_group: int | None = None
    # `offbench run --root`, and the dataset it loaded to check the request before anything was
    # written: where the data is read from, not what the cell is (its fingerprint is)
    data_root: str | None = None
    dataset: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        c = self.config
        variant = f" [{c['variant']}]" if c.get("variant") else ""
        seeds = seeds_phrase(c["seeds"])
        return f"{c['algorithm']}{variant} on {c['dataset']} ({c['mode']}, {seeds})"


def seeds_phrase(seeds: int) -> str:
    """'1 seed', '3 seeds': how sweep labels and `offbench run`'s summary lines count seeds."""
    return "1 seed" if seeds == 1 else f"{seeds} seeds"


def check_budget(budget: dict, config_class: type, mode: str, exclude: tuple = ()) -> None:
    """One ValueError naming every unknown key of a mode's budget table and every value of the
    wrong type (`updates = "100"`, `updates = 100.0`, `eval_episodes = true`), before anything
    is built or written."""
    hints = typing.get_type_hints(config_class)
    fields = [f.name for f in dataclasses.fields(config_class) if f.name not in exclude]
    problems = []
    unknown = sorted(set(budget) - set(fields))
    if unknown:
        problems.append(f"unknown {mode} budget keys {unknown}; valid: {sorted(fields)}")
    for key, value in budget.items():
        if key in unknown:
            continue
        accepted = typing.get_args(hints[key]) or (hints[key],)
        ok = any(value is None if t is type(None) else
                 (isinstance(value, int | float) and not isinstance(value, bool)) if t is float
                 else isinstance(value, t) and not (t is int and isinstance(value, bool))
                 for t in accepted)
        if not ok:
            names = " or ".join("none" if t is type(None) else t.__name__ for t in accepted)
            problems.append(f"{mode} budget {key} = {value!r}: expected {names}")
    if problems:
        raise ValueError("; ".join(problems))


# ---- offline mode -------------------------------------------------------------------------

def _offline_budget(budget: dict, algo_config: Any) -> dict:
    from offbench.loops import driver, offline

    check_budget(budget, offline.OfflineConfig, "offline")
    defaults = offline.OfflineConfig()
    updates = budget.get("updates", defaults.updates)
    config = dataclasses.replace(
        defaults, **{**budget, "eval_every": budget.get(
            "eval_every", driver.default_eval_every(defaults.eval_every, updates))})
    import offbench.envs as envs

    # the physics backend changes the numbers: resolve it now, into the cell's identity
    config = dataclasses.replace(config, backend=envs.resolve_backend(config.backend))
    config.validate()
    return config.identity()  # the sampler only when not uniform: uniform cells keep their ids


def _offline_algo_config(config: Any, budget: dict, given: set, algo: Any) -> Any:
    if hasattr(config, "max_steps") and "max_steps" not in given:
        # learning-rate schedules (IQL's cosine actor decay) span the run, as `offbench run` does
        config = dataclasses.replace(config, max_steps=budget["updates"])
    return config


def _offline_run(cell: Cell, out: Path, resume: bool, sinks: list) -> Any:
    from offbench.loops import offline

    c = cell.config
    algo_config = algo_config_from(c)
    config = offline.OfflineConfig(**c["budget"])
    return offline.train(c["algorithm"], c["dataset"], c["seeds"], config, algo_config, out,
                         resume=resume, first_seed=c["first_seed"], progress=False,
                         on_rows=_fanout(sinks), on_period=_each_period(sinks),
                         seed_group=cell.seed_group, data_root=cell.data_root,
                         dataset=cell.dataset)


register_mode(Mode("offline", _offline_budget, _offline_run, _offline_algo_config))


# ---- o2o and hybrid modes (one loop for both: offbench/loops/o2o.py) -------------------------

_MIXED_INTERNAL = ("mode",)  # set by the mode, not by a budget


def _mixed_budget(mode: str) -> Callable[[dict, Any], dict]:
    def resolve_budget(budget: dict, algo_config: Any) -> dict:
        from offbench.loops import driver, o2o

        check_budget(budget, o2o.MixedConfig, mode, exclude=_MIXED_INTERNAL)
        defaults = o2o.MixedConfig(mode=mode, offline_updates=0 if mode == "hybrid" else
                                   o2o.MixedConfig.offline_updates)
        online = budget.get("online_steps", defaults.online_steps)
        config = dataclasses.replace(
            defaults, **{**budget, "eval_every": budget.get(
                "eval_every", driver.default_eval_every(defaults.eval_every, online))})
        import offbench.envs as envs

        # the physics backend changes the numbers: resolve it now, into the cell's identity
        config = dataclasses.replace(config, backend=envs.resolve_backend(config.backend))
        config = o2o.resolve(config, algo_config)  # offline ratio and UTD from the algorithm
        return {k: v for k, v in dataclasses.asdict(config).items()
                if k not in _MIXED_INTERNAL}
    return resolve_budget


def _mixed_algo_config(mode: str) -> Callable[[Any, dict, set, Any], Any]:
    def adjust(config: Any, budget: dict, given: set, algo: Any) -> Any:
        from offbench.loops import o2o

        return o2o.fine_tuning_config(algo, config, mode, given)  # as `offbench run` does
    return adjust


def _mixed_run(mode: str) -> Callable[..., Any]:
    def run(cell: Cell, out: Path, resume: bool, sinks: list) -> Any:
        from offbench.loops import o2o

        c = cell.config
        config = o2o.MixedConfig(mode=mode, **c["budget"])
        return o2o.train(c["algorithm"], c["dataset"], c["seeds"], config, algo_config_from(c),
                         out, resume=resume, first_seed=c["first_seed"], progress=False,
                         on_rows=_fanout(sinks), on_period=_each_period(sinks),
                         seed_group=cell.seed_group, data_root=cell.data_root,
                         dataset=cell.dataset)
    return run


def _register_mixed_modes() -> None:
    from offbench.loops.o2o import MIXED_MODES

    for mode in MIXED_MODES:
        register_mode(Mode(mode, _mixed_budget(mode), _mixed_run(mode), _mixed_algo_config(mode)))


_register_mixed_modes()


def _fanout(sinks: list) -> Callable[[list[dict]], None] | None:
    """A chunk's rows to every sink that logs rows (`write`), once they are in metrics.csv."""
    writers = [sink for sink in sinks if hasattr(sink, "write")]
    if not writers:
        return None

    def write(rows: list[dict]) -> None:
        for sink in writers:
            sink.write(rows)
    return write


def _each_period(sinks: list) -> Callable[[list[dict], Any], None] | None:
    """An evaluation period's rows and progress to every sink that shows progress (`period`)."""
    reporters = [sink for sink in sinks if hasattr(sink, "period")]
    if not reporters:
        return None

    def period(rows: list[dict], progress: Any) -> None:
        for sink in reporters:
            sink.period(rows, progress)
    return period


# ---- a request -> the run description ----------------------------------------------------

RUN_PROFILE = "run"  # the profile of `offbench run`'s one-cell requests


def resolve(algo_name: str, dataset: str, mode_name: str, *, items: list[str] | tuple = (),
            variant: dict | None = None, budget: dict | None = None, backend: str | None = None,
            seeds: int = 1, first_seed: int = 0, profile: str = RUN_PROFILE,
            fingerprint: str | None | type = ...) -> dict:
    """A request (a sweep spec's combination, or `offbench run`'s flags) -> the resolved cell
    config: the one run description the store hashes and every executor runs. `items` are
    KEY=VALUE overrides of the algorithm's Config, `budget` the mode's budget table (defaults
    filled and checked by the mode); `fingerprint` of the dataset (default: computed).
    One ValueError for a request that cannot run, before anything is written."""
    from offbench.algorithms import apply_overrides, config_field, load_algorithm

    algo = load_algorithm(algo_name)
    mode = get_mode(mode_name)
    if mode_name not in algo.MODES:
        what = "has no offline mode" if mode_name == "offline" else (
            f"does not support mode '{mode_name}'")
        raise ValueError(f"algorithm '{algo_name}' {what} (its modes: {list(algo.MODES)})")
    if mode_name == "offline" and "@" in dataset:
        raise ValueError(f"'{dataset}' is a hybrid sim-to-real task: use --mode hybrid (or o2o)")
    algo_config = apply_overrides(algo.Config(), list(items))
    given = {item.partition("=")[0] for item in items}
    table = dict(budget or {})
    if backend is not None:
        table.setdefault("backend", backend)
    resolved = mode.resolve_budget(table, algo_config)
    algo_config = mode.adjust_algo_config(algo_config, resolved, given, algo)
    if fingerprint is ...:
        from offbench.data.builder import dataset_fingerprint

        fingerprint = dataset_fingerprint(dataset)
    # a true-dynamics cell on a dataset with stored physics states starts its rollouts from them
    # (offbench/models/rollouts.py): the states' hash is part of its identity; cells without
    # them keep the ids they always had
    physics = None
    if config_field(algo_config, "dynamics") == "true" and mode_name == "offline":
        from offbench.data.builder import physics_fingerprint

        physics = physics_fingerprint(dataset)
    variant = variant or {}
    config = {
        "algorithm": algo_name, "module": algo.__name__, "dataset": dataset,
        "dataset_sha256": fingerprint, "mode": mode_name, "budget": resolved,
        "algo_config": dataclasses.asdict(algo_config), "overrides": sorted(items),
        "variant": ",".join(f"{k}={v}" for k, v in variant.items()),
        "seeds": int(seeds), "first_seed": int(first_seed), "profile": str(profile),
        **({"physics_sha256": physics} if physics else {})}
    return json.loads(canonical_json(config))  # exactly what cell.json holds


def load_dataset(config: dict, data_root: str | Path | None = None) -> Any:
    """A cell's dataset as its loop reads it (the algorithm's derived fields, its discount);
    for o2o/hybrid the real task's data of a `DATASET@sim:...` name."""
    from offbench import hybrid
    from offbench.algorithms import load_algorithm
    from offbench.loops import offline

    algo = load_algorithm(config["algorithm"])
    data_id = (config["dataset"] if config["mode"] == "offline"
               else hybrid.split(config["dataset"])[0])
    return offline.load_dataset(algo, algo_config_from(config), data_id, data_root)


@dataclasses.dataclass
class SweepResult:
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]  # cell folder name -> error


def algo_config_from(config: dict) -> Any:
    """The algorithm's Config object from a cell's resolved config."""
    from offbench.algorithms import config_from_dict, load_algorithm

    return config_from_dict(load_algorithm(config["algorithm"]).Config, config["algo_config"])


BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError)  # what the CLI reports in a line


def run_cell(cell: Cell, folder: CellDir, resume: bool,
             log: Callable[[str], None] | None = None,
             raise_bad_input: bool = False) -> str | None:
    """Train one cell; returns None or the error (also written to the cell's status.json).
    log: where a progress line goes after every evaluation period (None: no progress lines).
    raise_bad_input: a BAD_INPUT error (the request does not fit the folder, e.g. a resume with
    other settings) is raised with the folder's status put back as it was, instead of being
    recorded as the cell's failure (`offbench run`: one clear error, nothing changed)."""
    from offbench.harness import sinks as sink_module

    mode = get_mode(cell.config["mode"])
    status_path = folder.path / "status.json"
    before = status_path.read_bytes() if status_path.exists() else None
    previous = folder.status().get("state")
    # a failed or killed cell restarts from its last checkpoint, if it got that far
    resume_cell = resume or previous in ("running", "failed")
    folder.set_status("running", started=time.time())
    opened: list = []
    start = time.perf_counter()
    try:
        opened = sink_module.open_sinks(cell.sinks, folder.path, cell.config)
        if log is not None:
            opened.append(sink_module.ProgressSink(cell.label, log))
        table = mode.run(cell, folder.path, resume_cell, opened)
    except Exception as err:  # noqa: BLE001 - a crashing cell must not end the sweep
        if raise_bad_input and isinstance(err, BAD_INPUT):
            if before is None:
                status_path.unlink(missing_ok=True)
            else:
                write_bytes_atomic(status_path, before)
            raise
        message = f"{type(err).__name__}: {err}"
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            message += ("; free disk space, then rerun with --resume (it continues from the "
                        "last checkpoint that was saved whole)")
        folder.set_status("failed", error=message, traceback=traceback.format_exc(),
                          wall_s=time.perf_counter() - start)
        return message
    finally:
        for sink in opened:
            sink.close()
    folder.set_status("complete", wall_s=time.perf_counter() - start,
                      rows=int(len(table)) if table is not None else 0)
    return None
