"""The Ray executor of `offbench sweep --executor ray`: one Ray task per cell.

Nothing changes about what a cell is or how it is written: each task runs `cells.run_cell`,
the very function the local executor calls, so all seeds of a cell still train vmapped in one
XLA program in one process, and the task writes its cell folder (metrics.csv, run.json,
checkpoints, status.json, all atomically) straight into the store. The driver (the machine
running `offbench sweep`) expands the spec, registers every cell (cell.json), skips complete
ones, submits the rest and records what comes back. Hence the store's path must be the same
and shared (NFS, a cluster filesystem) on every node, and so must the data root of datasets
the driver builds.

Where the cluster is: `address` (`--ray-address HOST:PORT`, or `auto` for the cluster this
node belongs to), else Ray's own RAY_ADDRESS, else a new local Ray instance on this machine
(Ray's default one: all its cores, token authentication on), shut down at the end. When the
caller has already called `ray.init` (e.g. to give a `runtime_env`), that connection is used
as it is and left open.

Workers import offbench and the cells' algorithm modules themselves: on a cluster, every node
needs the same installation (the same Python environment at the same path, or one on the
shared filesystem) and the modules importable (installed, or on the PYTHONPATH `ray start`
was given; Ray also puts the driver's working directory on workers' sys.path).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offbench.harness.cells import Cell, SweepResult
    from offbench.harness.store import Store

# Set on the driver, read by the cells on each node at run time: forwarded so that a worker
# looks for datasets where the driver built them (a path on the shared filesystem). Nothing
# else of the driver's environment is forwarded; nodes keep the one `ray start` gave them.
FORWARDED_ENV = ("OFFBENCH_DATASETS", "MINARI_DATASETS_PATH")


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How cells go to Ray. `cpus_per_cell`/`gpus_per_cell` are the Ray resources one cell
    reserves, so they decide how many cells share a node at once (XLA itself still uses
    every core it sees; on GPU nodes give each cell a GPU: Ray then sets its
    CUDA_VISIBLE_DEVICES)."""

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus_per_cell < 0 or self.gpus_per_cell < 0:
            raise ValueError("--ray-cpus-per-cell and --ray-gpus-per-cell must be >= 0")


def resolve_address(address: str | None) -> str:
    """The address given, else $RAY_ADDRESS, else "local" (Ray's word for a new instance on
    this machine). Plain `ray.init()` would instead join whatever cluster was last started on
    this machine, which is not what a sweep without an address should do."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def check_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ValueError("the ray executor needs the ray package: pip install -c constraints.txt "
                         "-e '.[ray]' (make setup installs it); or use --executor local")


def run_cells(cells: list[Cell], store: Store, sweep_name: str, resume: bool,
              options: RayOptions, log: Callable[[str], None]) -> SweepResult:
    """Run `cells` as Ray tasks into `store`; the same contract and result as the local
    executor (complete cells skipped, a failed cell recorded and the others go on)."""
    from offbench.harness.cells import SweepResult

    total = len(cells)
    todo: list[tuple[int, Cell, Any]] = []  # (index, cell, CellDir) to submit
    skipped: list[tuple[int, str]] = []
    first_of: dict[str, int] = {}  # folder name -> index of the first cell with that config
    for index, cell in enumerate(cells):
        folder = store.register(cell.config, sweep_name)
        if folder.complete:
            log(f"[{index + 1}/{total}] complete, skipped: {cell.label}")
            skipped.append((index, folder.name))
        elif folder.name in first_of:
            # the same config twice in one spec: run once (two tasks would write one folder);
            # the local executor would find it complete when it got there and skip it
            skipped.append((index, folder.name))
        else:
            first_of[folder.name] = index
            todo.append((index, cell, folder))
    ran: list[tuple[int, str]] = []
    failed: dict[int, tuple[str, str]] = {}
    if todo:  # a sweep with nothing left to run needs no cluster
        for index, name, error in _submit_and_wait(todo, total, resume, options, log):
            if error is None:
                ran.append((index, name))
            else:
                failed[index] = (name, error)
    ran_names = {name for _, name in ran}
    # duplicates of a cell that failed are not skipped, they failed (once, under one name)
    skipped = [(i, n) for i, n in skipped if n not in first_of or n in ran_names]
    return SweepResult(ran=[n for _, n in sorted(ran)], skipped=[n for _, n in sorted(skipped)],
                       failed={name: error for _, (name, error) in sorted(failed.items())})


def _check_resources(options: RayOptions, local: bool, log: Callable[[str], None]) -> None:
    """Ray leaves a task that no node can take waiting forever: say so up front."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= options.cpus_per_cell and n.get("GPU", 0) >= options.gpus_per_cell
           for n in nodes):
        return
    message = (f"no node of the Ray cluster has {options.cpus_per_cell:g} CPU(s) and "
               f"{options.gpus_per_cell:g} GPU(s) for a cell (nodes: {nodes}); lower "
               "--ray-cpus-per-cell / --ray-gpus-per-cell")
    if local:  # a local instance never grows
        raise ValueError(message)
    log(f"warning: {message}, or the cells wait until such a node joins (an autoscaler)")


def _submit_and_wait(todo: list[tuple[int, Cell, Any]], total: int, resume: bool,
                     options: RayOptions, log: Callable[[str], None],
                     ) -> Iterator[tuple[int, str, str | None]]:
    import ray

    from offbench import provenance

    started = not ray.is_initialized()
    address = resolve_address(options.address) if started else None
    if started:
        # no dashboard for a local instance: nobody looks at it, and the pinned minimal ray
        # package lacks its dependencies
        try:
            ray.init(address=address, **({"include_dashboard": False} if address == "local"
                                         else {}))
        except ConnectionError as err:
            raise ValueError(
                f"cannot connect to the Ray cluster at {address}: {err} (is `ray start` running "
                "there? with Ray's token authentication on, the driver also needs "
                "RAY_AUTH_MODE=token and the cluster's token)") from None
        log(f"ray: connected to {address}; resources {ray.cluster_resources()}")
    try:
        _check_resources(options, local=address == "local", log=log)
        task = ray.remote(_run_cell_task).options(
            num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell,
            # a worker that dies (killed, out of memory, node lost) fails its cell like an
            # exception would; `--resume` then continues it from its last checkpoint instead
            # of Ray silently rerunning a cell that may die the same way
            max_retries=0)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        command = provenance.command_line()  # the worker's own argv is Ray's, not the sweep's
        pending = {}
        for index, cell, folder in todo:
            # absolute (workers run in another directory), symlinks kept: the user's path to
            # the shared filesystem is the one every node mounts
            path = str(folder.path.absolute())
            ref = task.remote(cell.config, tuple(cell.sinks), path, resume, env, command,
                              cell.seed_group)
            pending[ref] = (index, cell, folder)
            log(f"[{index + 1}/{total}] submitted: {cell.label} -> {path}")
        while pending:
            # short waits in a loop rather than one unbounded wait: the main thread returns to
            # Python between them, so Ctrl-C and SIGTERM stop the sweep promptly
            done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            if not done:
                continue
            ref = done[0]
            index, cell, folder = pending.pop(ref)
            try:
                error = ray.get(ref)
            except ray.exceptions.RayError as err:
                # the task never got to record anything itself (its worker died, or offbench
                # could not be imported on that node): record the failure for it
                error, text = _describe(err)
                folder.set_status("failed", error=error, traceback=text)
            if error is None:
                log(f"[{index + 1}/{total}] done: {cell.label}")
            else:
                log(f"[{index + 1}/{total}] FAILED: {cell.label}: {error}")
            yield index, folder.name, error
    finally:
        if started:
            ray.shutdown()


def _describe(err: Exception) -> tuple[str, str]:
    """(one line for the summary, the whole text) of a Ray error, without its colour codes."""
    import ray

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(err, ray.exceptions.RayTaskError) and lines:
        # its text is the task's traceback: the last line names the exception that ended it
        return f"{lines[-1]} (in the Ray task)", text
    return f"{type(err).__name__}: {lines[0] if lines else ''}", text


def _run_cell_task(config: dict, sinks: tuple[str, ...], path: str, resume: bool,
                   env: dict[str, str], command: str,
                   seed_group: int | None = None) -> str | None:
    """One cell on a Ray worker: what the local executor does for it, in this process."""
    os.environ.update(env)
    # as offbench.cli.main does: no XLA log spam, JAX's persistent compilation cache on
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import offbench
    from offbench import provenance
    from offbench.harness import cells
    from offbench.harness.store import CellDir

    offbench.enable_compilation_cache()
    provenance.COMMAND = command
    # progress lines go to the worker's stdout, which Ray forwards to the driver
    return cells.run_cell(cells.Cell(config, sinks, seed_group), CellDir(Path(path)),
                          resume=resume, log=print)
