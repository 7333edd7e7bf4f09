"""`offbench doctor` (`make doctor`): the first command to run on a new machine or accelerator.

In a few minutes it reports what the benchmark will run on and whether a profile fits:

- the devices JAX sees and their memory, and the physics backend the tasks will use there
  (`offbench.envs.physics.resolve_backend`: the C engine on CPU, MJX on GPU/TPU);
- env steps/s on MJX and on the C backend (random actions, a vmapped batch) with the compile
  time of the measured program (`offbench.perf.envs`);
- one 2-seed offline cell's updates/s and compile time on synthetic data of the task's shapes
  (`offbench.perf.offline`), with the algorithm's published network;
- the device memory the profile's largest cell needs, estimated from its resolved config:
  the dataset once (the loops share it across vmapped seeds), the replay buffer per seed
  (o2o/hybrid) and the algorithm's state per seed (parameters, targets, optimizer moments: its
  exact shapes from `jax.eval_shape` of `init`). Activations and XLA's temporaries come on
  top, so a cell needing more than half the device's memory is flagged.

Nothing is written; the numbers are for the reader, `make perf` is the benchmark of record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

FLOAT_BYTES = 4
MEMORY_WARN = 0.5  # fraction of device memory above which the largest cell is flagged


def device_memory(device) -> int | None:
    """Bytes of memory `device` offers: its allocator's limit on an accelerator, the host's
    physical memory on CPU (None when neither is known)."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not implement memory_stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def _fields(algo, algo_config, env) -> list[tuple[str, int]]:
    """(derived field, floats a row) of a cell's arrays: its DATASET_FIELDS (mc_returns: one),
    and with dynamics=true the physics states the loop asks for (qpos ++ qvel; datasets built
    before they were stored have none, so this is an upper bound)."""
    from offbench import envs
    from offbench.algorithms import config_field, contract

    act = env.action_size
    out = [(f, act if f == "next_actions" else 1) for f in contract(algo).dataset_fields]
    if config_field(algo_config, "dynamics") == "true" and isinstance(
            getattr(env.unwrapped, "spec", None), envs.LocomotionSpec):
        out.append(("physics", env.unwrapped.model.nq + env.unwrapped.model.nv))
    return out


def _state_bytes(algo, spec, algo_config, transitions: int, fields) -> float:
    """Bytes of one seed's algorithm state, from the shapes `init` returns (jax.eval_shape):
    without a dataset, or, for an algorithm whose state depends on its data (model-based: a
    model buffer), with abstract dataset arrays of the cell's size; NaN when neither traces."""
    def nbytes(shapes):
        return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    key = jax.random.PRNGKey(0)
    try:
        return nbytes(jax.eval_shape(lambda k: algo.init(k, spec, algo_config, None), key))
    except Exception:  # an init that needs its dataset
        pass
    o, a, n = spec.observation_size, spec.action_size, transitions
    data = {"obs": (n, o), "action": (n, a), "reward": (n,), "next_obs": (n, o),
            "terminal": (n,), **{f: (n, w) if w > 1 else (n,) for f, w in fields}}
    data = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in data.items()}
    try:
        return nbytes(jax.eval_shape(lambda k, d: algo.init(k, spec, algo_config, d), key, data))
    except Exception:
        return float("nan")


def cell_memory(config: dict) -> dict[str, int]:
    """Estimated resident bytes of one cell (a resolved config as `cells.resolve` gives it):
    dataset, replay (all seeds), algorithm state (all seeds) and their total."""
    from offbench import envs, hybrid
    from offbench.algorithms import EnvSpec, load_algorithm
    from offbench.data import ids
    from offbench.harness.cells import algo_config_from

    algo = load_algorithm(config["algorithm"])
    algo_config = algo_config_from(config)
    data_id = config["dataset"]
    if config["mode"] != "offline":
        data_id = hybrid.split(data_id)[0]
    name = ids.parse(data_id.split("+")[0])  # transforms change a dataset's size a little
    env = envs.make(name.task)
    obs, act = env.observation_size, env.action_size
    seeds = int(config["seeds"])
    row = 2 * obs + act + 2  # obs, next_obs, action, reward, terminal
    fields = _fields(algo, algo_config, env)
    dataset = name.size * (row + sum(w for _, w in fields)) * FLOAT_BYTES
    replay = 0
    if config["mode"] != "offline":
        budget = config["budget"]
        size = budget.get("buffer_size") or min(int(budget["online_steps"]), 1_000_000)
        replay = seeds * size * (row + 1) * FLOAT_BYTES  # + the done flag of time limits
    # the task and backend too: a true-dynamics model-based cell's init steps the task's env
    spec = EnvSpec(obs, act, name.task, env.unwrapped.backend)
    state = seeds * _state_bytes(algo, spec, algo_config, name.size, fields=fields)
    return {"dataset": dataset, "replay": replay, "state": state,
            "total": dataset + replay + (0 if np.isnan(state) else state)}


def largest_cell(spec_path: Path) -> tuple[str, dict[str, int]]:
    """The label and memory estimate of the cell needing the most memory among the spec's and
    its sections' (the specs its `needs` names: a bench profile's O2O and hybrid sections)."""
    from offbench.harness import sweep

    best = ("", {"total": -1})
    for _, section in sweep.with_needs(spec_path):
        for cell in sweep.expand(section, lambda *_: None):
            memory = cell_memory(cell.config)
            if memory["total"] > best[1]["total"]:
                best = (cell.label, memory)
    return best


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:,.2f} GiB"


def run(profile: str, spec_path: Path, backend: str | None = None, task: str = "hopper",
        algorithm: str = "td3_bc", batch: int = 64, updates: int = 1000, repeats: int = 3,
        log: Callable[[str], None] = print) -> dict:
    """Every check above, each logged as one line as it completes; returns what was
    measured. `backend` forces the env backend of the tasks (default: the device's)."""
    from offbench import envs
    from offbench.algorithms import load_algorithm
    from offbench.envs.physics import resolve_backend
    from offbench.perf import envs as perf_envs
    from offbench.perf import offline as perf_offline

    start = time.perf_counter()
    report: dict = {"devices": [], "profile": profile}
    for device in jax.devices():
        memory = device_memory(device)
        report["devices"].append({"device": str(device), "platform": device.platform,
                                  "kind": getattr(device, "device_kind", ""),
                                  "memory_bytes": memory})
        log(f"device      {device} ({getattr(device, 'device_kind', device.platform)}), "
            f"memory {_mib(memory) if memory else 'unknown'}")
    chosen = resolve_backend(backend)
    report["backend"] = chosen
    log(f"backend     {chosen} for every task ({', '.join(envs.task_names())})"
        + ("" if backend else f"; the default on {jax.default_backend()}, --backend to force"))

    report["env_steps_per_s"] = {}
    for name in dict.fromkeys([chosen, "mjx", "mujoco"]):
        row = perf_envs.bench_offbench(task, name, batch, repeats, yardstick=False)[0]
        report["env_steps_per_s"][name] = row["env_steps_per_s"]
        log(f"env         {task} on {name}, {batch} envs vmapped: "
            f"{row['env_steps_per_s']:,.0f} steps/s (compile {row['compile_s']:.1f} s)")

    algo = load_algorithm(algorithm)
    problem, arrays = perf_offline.synthetic_problem(algo, algo.Config(), task, updates, chosen)
    compile_s, seconds, _ = perf_offline.time_updates(problem, arrays, 2, None, updates, repeats)
    report["offline"] = {"algorithm": algorithm, "seeds": 2, "compile_s": compile_s,
                         "updates_per_s": 2 * updates / seconds}
    log(f"offline     {algorithm} on {task} (its published network), 2 seeds vmapped: "
        f"{2 * updates / seconds:,.0f} seed-updates/s (compile {compile_s:.1f} s)")

    label, memory = largest_cell(spec_path)
    available = report["devices"][0]["memory_bytes"]
    fraction = memory["total"] / available if available else float("nan")
    report["memory"] = {"cell": label, **memory, "available": available, "fraction": fraction}
    verdict = ("unknown device memory" if not available else
               "fits" if fraction <= MEMORY_WARN else
               "TIGHT: activations and XLA's temporaries come on top" if fraction <= 1 else
               "DOES NOT FIT: fewer seeds per group (--seed-group) or a smaller buffer")
    log(f"memory      profile '{profile}' ({spec_path}), largest cell {label}: "
        f"{_mib(memory['total'])} (dataset {_mib(memory['dataset'])}, replay "
        f"{_mib(memory['replay'])}, state {_mib(memory['state'])})"
        + (f" = {100 * fraction:.1f}% of {_mib(available)}: {verdict}" if available else ""))
    report["ok"] = bool(not available or fraction <= 1)
    report["seconds"] = time.perf_counter() - start
    log(f"doctor      {'ok' if report['ok'] else 'PROBLEM'} in {report['seconds']:.0f} s")
    return report
