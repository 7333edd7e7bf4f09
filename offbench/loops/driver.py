"""The host side shared by every training loop (online, offline, O2O): run a compiled
evaluation period after another, save Orbax checkpoints between chunks of periods, write
per-seed metrics and the run record, show progress, and resume a killed run from its last
checkpoint.

A loop provides `init(keys) -> carry` (vmapped over seeds) and `make_chunk(n)`, a per-seed
function `chunk(carry, first_period, *static_args) -> (carry, (metrics, snapshots))` running n
evaluation periods; the driver vmaps it over seeds (static_args, e.g. the dataset, are shared),
compiles it for n = 1 and shards the seed axis across local devices when there are several.

One period per call: its results reach the host as soon as it ends, so progress moves every
evaluation period, and one program serves every chunk length (checkpoint_every only sets how
often the host saves). With or without progress output the compiled program is the same; the
numbers equal those of one call per chunk (tests/test_offline.py checks metrics bit for bit).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from offbench.io import write_bytes_atomic, write_text_atomic
from offbench.provenance import record


def check_settings(out: Path, settings: dict, resume: bool) -> dict:
    """Settings as they read back from disk; on resume they must equal the saved ones."""
    settings = json.loads(json.dumps(settings, default=str))
    path = out / "settings.json"
    if resume and path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"--resume with settings that differ from the run in {out}: "
                             f"{', '.join(changed)}; resume with the original settings")
    return settings


def default_eval_every(default: int, length: int) -> int:
    """The evaluation period of a run whose request names none: its loop config's default
    `eval_every`, or the run's whole length (updates or env steps) when that is shorter, so a
    short run still evaluates. Used by `offbench train-online` and every sweep mode."""
    return min(default, length)


def seed_sharding(seeds: int):
    """A sharding that splits the leading (seed) axis across local devices, or None when there
    is one device or the seeds do not divide evenly."""
    devices = jax.local_devices()
    if len(devices) < 2 or seeds % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def seed_device_count(seeds: int) -> int:
    """How many devices `seeds` seeds are split across (`seed_sharding`)."""
    return jax.local_device_count() if seed_sharding(seeds) is not None else 1


def shard_seeds(tree: Any, seeds: int) -> tuple[Any, int]:
    """`tree` with its seed axis split across the local devices, and how many devices it is on.
    Says so on stderr when there are several devices but the seeds do not divide among them."""
    sharding = seed_sharding(seeds)
    devices = jax.local_device_count()
    if sharding is None:
        if devices > 1:
            print(f"note: {seeds} seeds do not divide evenly among {devices} devices, so they "
                  f"all run on one; choose --seeds as a multiple of {devices} to use every "
                  "device", file=sys.stderr)
        return tree, 1
    return jax.device_put(tree, sharding), devices


def check_seed_group(seeds: int, seed_group: int | None, devices: int) -> bool:
    """Whether `seed_group` splits the seeds into groups (False: all vmapped at once); one clear
    error for a size that cannot."""
    if seed_group is None or seed_group >= seeds:
        return False
    if seed_group < 1 or seeds % seed_group or seed_group % devices:
        raise ValueError(f"--seed-group {seed_group} must divide the {seeds} seeds and be a "
                         f"multiple of the {devices} device(s) they are sharded over; choose "
                         "one such size, or leave it unset to vmap all seeds at once")
    return True


def map_seeds(fn: Callable, in_axes: tuple, seeds: int, seed_group: int | None = None,
              devices: int = 1) -> Callable:
    """`fn` over the leading seed axis of its first argument (the carry): all seeds vmapped at
    once (seed_group None or >= seeds), or in vmapped groups of `seed_group` seeds that run one
    after another inside the same program (`lax.map`).

    Why groups: on this 2-core CPU, vmapping 8 seeds at once costs more per seed than 1 seed
    alone for updates with large activations (critic ensembles, CQL's sampled actions), and
    vmapped groups of 2 win the loss back for SAC-N and EDAC, not for CQL
    (results/perf/seed-groups/offline.md). Measured, not fully
    explained: a jax.profiler trace of CQL's update, per seed-update, shows with 8 seeds less
    matmul time than with 1, 40% more time in the copies (transposes) XLA's CPU backend makes
    of batched-dot activations for the backward pass (126 MB each at 8 seeds), and XLA's ops
    overlapping less on the two cores (their summed time below the wall time with 8 seeds, above
    it with 1). On a GPU/TPU one program over all seeds is what keeps the device busy: leave it
    unset.

    A group holds seeds s, s + seeds/seed_group, ...: it takes one seed from each contiguous
    block, so when the seed axis is sharded every device gets its share of every group, and a
    group must divide among the devices. Each seed's numbers equal the all-vmapped ones to
    float rounding (as vmapped equals alone)."""
    vmapped = jax.vmap(fn, in_axes=in_axes)
    if not check_seed_group(seeds, seed_group, devices):
        return vmapped
    steps = seeds // seed_group

    def split(x):  # [seeds, ...] -> [steps, seed_group, ...]; seed = g * steps + step
        return jnp.swapaxes(x.reshape(seed_group, steps, *x.shape[1:]), 0, 1)

    def join(x):  # the inverse of split
        return jnp.swapaxes(x, 0, 1).reshape(seeds, *x.shape[2:])

    def grouped(carry, *rest):
        out = jax.lax.map(lambda c: vmapped(c, *rest), jax.tree.map(split, carry))
        return jax.tree.map(join, out)
    return grouped


def _checkpointer(directory: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(directory.resolve(), options=options)


def _seed_inputs(first_seed: int, seeds: int) -> tuple[jax.Array, jax.Array]:
    """What `init` is vmapped over: each seed's key, and its position in the vmapped batch."""
    keys = jnp.stack([jax.random.PRNGKey(first_seed + s) for s in range(seeds)])
    return keys, jnp.arange(seeds, dtype=jnp.int32)


def _restore(manager: Any, init_fn: Callable, inputs: tuple) -> tuple[Any, int]:
    """The latest checkpoint, restored into the structure `init_fn(*inputs)` has."""
    import orbax.checkpoint as ocp

    done = manager.latest_step()
    abstract = jax.eval_shape(init_fn, *inputs)
    return manager.restore(done, args=ocp.args.StandardRestore(abstract)), done


def restore_latest(out: Path, init: Callable[[jax.Array, jax.Array], Any], seeds: int,
                   first_seed: int) -> tuple[Any, int]:
    """The carry (all seeds) of the latest checkpoint in run folder `out`, and its period."""
    directory = Path(out) / "checkpoints"
    if not directory.is_dir():
        raise ValueError(f"{out} has no checkpoints folder: nothing to restore")
    manager = _checkpointer(directory)
    if manager.latest_step() is None:
        raise ValueError(f"{directory} holds no checkpoint yet (the run saves one every "
                         "checkpoint_every updates)")
    return _restore(manager, jax.jit(jax.vmap(init)), _seed_inputs(first_seed, seeds))


def run(*, out: Path, settings: dict, mode: str, init: Callable[[jax.Array, jax.Array], Any],
        make_chunk: Callable[[int], Callable], seeds: int, first_seed: int, periods: int,
        periods_per_chunk: int, units_per_period: int, unit: str, resume: bool,
        progress: bool = True, static_args: Sequence[Any] = (),
        snapshot_writer: Callable | None = None,
        after_chunk: Callable[[int], None] | None = None,
        summarize: Callable[[pd.DataFrame], dict] | None = None,
        annotate: Callable[[int], dict] | None = None,
        on_rows: Callable[[list[dict]], None] | None = None,
        seed_group: int | None = None,
        final_eval: Callable[[Any], dict[str, dict]] | None = None,
        on_period: Callable[[list[dict], Progress], None] | None = None,
        describe: Callable[[int], str] | None = None) -> pd.DataFrame:
    """Train all seeds to `periods` evaluation periods; returns the per-seed metrics table.

    init(key, seed_index): one seed's initial carry (seed_index: its position in the vmapped
    batch). after_chunk: called with the number of chunks done after each chunk's metrics and
    checkpoint are written (tests end the process there to check resume-after-kill).
    summarize: extra fields for run.json at the end. annotate: period -> extra columns of its
    rows (e.g. the O2O phase). seed_group: run the
    seeds in vmapped groups of this size one after another (`map_seeds`; a CPU speed knob that
    changes results only to float rounding, so it is recorded in run.json, not in the settings
    a resume must match). final_eval: the trained carry -> per seed (str) fields of run.json's
    per_seed (the final policy's many-episode evaluation), over those `summarize` gave; the
    periodic last score is kept as last_periodic_score.
    on_period: called after every evaluation period with its rows (one per seed) and a
    `Progress`; on_rows (logging sinks) after every chunk, once its metrics.csv rows and
    checkpoint are written. describe: period index -> where the run is after it, for progress
    (default "<unit>s 2000/10000"). A row's wall_s: seconds from the start of this process's
    training (after setup, compile included) to the end of that row's evaluation period.
    """
    import orbax.checkpoint as ocp

    out = Path(out)
    check_seed_group(seeds, seed_group, seed_device_count(seeds))  # before anything is written
    settings = check_settings(out, settings, resume)
    inputs = _seed_inputs(first_seed, seeds)
    init_fn = jax.jit(jax.vmap(init))
    manager = _checkpointer(out / "checkpoints")
    metrics_path = out / "metrics.csv"
    rows: list[dict] = []
    done = 0
    if resume and manager.latest_step() is not None:
        carry, done = _restore(manager, init_fn, inputs)
        if metrics_path.exists():
            # round_trip: the default parser can be 1 ulp off, and resumed rows must be exact
            rows = (pd.read_csv(metrics_path, float_precision="round_trip")
                    .query("period < @done").to_dict("records"))
    else:
        if (metrics_path.exists() or manager.latest_step() is not None) and not resume:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or "
                             "choose another --out")
        carry = init_fn(*inputs)
    carry, seed_devices = shard_seeds(carry, seeds)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "settings.json").exists():
        write_text_atomic(out / "settings.json", json.dumps(settings, indent=2))
    run_info = {**settings, "mode": mode, **record(), "seed_devices": seed_devices,
                "seed_group": seed_group}
    run_path = out / "run.json"
    if not run_path.exists():  # provenance from the start; wall and compile time added at the end
        write_text_atomic(run_path, json.dumps(run_info, indent=2, default=str))
    fn = None
    compile_s = 0.0
    start = time.perf_counter()
    bar = _progress(progress, periods * units_per_period, done * units_per_period, unit)
    describe = describe or _counted(unit, units_per_period, periods)
    first_done, chunks = done, 0
    in_axes = (0, None, *([None] * len(static_args)))
    while done < periods:
        n = min(periods_per_chunk, periods - done)
        chunk_rows: list[list[dict]] = []  # per period, one row per seed
        for p in range(done, done + n):
            first = jnp.asarray(p, jnp.int32)
            if fn is None:
                t0 = time.perf_counter()
                fn = jax.jit(map_seeds(make_chunk(1), in_axes, seeds, seed_group, seed_devices))
                fn = fn.lower(carry, first, *static_args).compile()
                compile_s += time.perf_counter() - t0
            carry, (metrics, snaps) = fn(carry, first, *static_args)
            metrics, snaps = jax.device_get((metrics, snaps))
            if snapshot_writer is not None:
                snapshot_writer(snaps, p, 1)
            wall = time.perf_counter() - start
            period_rows = []
            for s in range(seeds):
                row = {"seed": first_seed + s, "period": p}
                if annotate is not None:
                    row.update(annotate(p))
                row.update({k: float(np.asarray(v)[s, 0]) for k, v in metrics.items()})
                row["wall_s"] = wall
                period_rows.append(row)
            chunk_rows.append(period_rows)
            ran = p + 1 - first_done
            eta = (wall - compile_s) / ran * (periods - p - 1)
            info = Progress(p + 1, periods, describe(p), wall, eta)
            if on_period is not None:
                on_period(period_rows, info)
            if bar is not None:
                bar.update(units_per_period)
                bar.set_postfix(_postfix(period_rows, seeds * ran * units_per_period / wall,
                                         unit))
        # seed-major within a chunk, as metrics.csv has always been written
        rows.extend(chunk_rows[j][s] for s in range(seeds) for j in range(n))
        done += n
        table = pd.DataFrame(rows)
        write_text_atomic(metrics_path, table.to_csv(index=False))
        manager.save(done, args=ocp.args.StandardSave(carry))
        manager.wait_until_finished()
        if on_rows is not None:
            on_rows(rows[-seeds * n:])
        chunks += 1
        if after_chunk is not None:
            after_chunk(chunks)
    if bar is not None:
        bar.close()
    table = pd.DataFrame(rows)
    finished_before = chunks == 0 and "wall_s" in json.loads(run_path.read_text())
    if not finished_before:  # a finished run resumed again keeps its record
        run_info.update(wall_s=time.perf_counter() - start, compile_s=compile_s)
        if summarize is not None:
            run_info.update(summarize(table))
        if final_eval is not None:
            per_seed = run_info.setdefault("per_seed", {})
            for seed, fields in final_eval(carry).items():
                entry = per_seed.setdefault(seed, {})
                for key in ("last_score", "last_return"):
                    if key in entry:
                        entry[key.replace("last_", "last_periodic_")] = entry[key]
                entry.update(fields)
        write_text_atomic(run_path, json.dumps(run_info, indent=2, default=str))
    return table


def snapshot_writer(root: Path, first_seed: int, seeds: int) -> Callable:
    """Writes per-period snapshots to root/seed<S>/period_<P>.msgpack (flax msgpack)."""
    from flax import serialization

    def write(snaps: Any, first_period: int, periods: int) -> None:
        for s in range(seeds):
            folder = root / f"seed{first_seed + s}"
            for j in range(periods):
                tree = jax.tree.map(lambda x, s=s, j=j: np.asarray(x[s, j]), snaps)
                data = serialization.msgpack_serialize(serialization.to_state_dict(tree))
                write_bytes_atomic(folder / f"period_{first_period + j:05d}.msgpack", data)
    return write


@dataclass(frozen=True)
class Progress:
    """Where a run is after an evaluation period, for progress output."""

    period: int  # evaluation periods done (1-based count)
    periods: int  # of the whole run
    where: str  # e.g. "updates 2000/10000" (`run`'s describe)
    elapsed_s: float  # since this process started training (compile included)
    eta_s: float  # remaining periods at this process's mean time per period (compile excluded)


def _counted(unit: str, units_per_period: int, periods: int) -> Callable[[int], str]:
    """period index -> "updates 2000/10000": the units done after it, of the run's total."""
    return lambda p: f"{unit}s {(p + 1) * units_per_period}/{periods * units_per_period}"


def _postfix(rows: list[dict], rate: float, unit: str) -> dict:
    postfix = {"eval_return": f"{np.mean([r['eval_return'] for r in rows]):.1f}",
               f"{unit}s_per_s": f"{rate:.0f}"}
    if "diverged" in rows[0]:
        postfix["diverged"] = int(sum(r["diverged"] > 0 for r in rows))
    return postfix


def _progress(enabled: bool, total: int, initial: int, unit: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True)
