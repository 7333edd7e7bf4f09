"""Environment throughput: env steps/s per task, backend and batch size, plus compile time.

Engines measured on the same machine in one run:
  offbench/mujoco    our C-engine backend: jit(scan(vmap(step))) with auto-reset, random actions
  offbench/mjx       the same program on the MJX backend
  rollout/replay     `mujoco.rollout` stepping exactly the states and actions our C backend
                     stepped (recorded from the same program), once per env step: the raw
                     engine on identical work, the yardstick for our step's overhead
  rollout/per-step   `mujoco.rollout` called once per env step (nstep=frame_skip) from its own
                     random rollout
  rollout/open-loop  `mujoco.rollout` running all steps of a measurement in one call: the
                     engine's best case, the yardstick for the C backend's overhead
  gymnasium          Gymnasium's v5 env stepped one env at a time from Python (what CORL and
                     d3rlpy users do today)
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pandas as pd
from mujoco import rollout

import offbench.envs as envs
from offbench.io import write_text_atomic
from offbench.perf import measure_cold_compiles
from offbench.provenance import record

BATCHES = (1, 16, 256)
# the navigation tasks' table (`make perf`), named in a table without them
NAVIGATION = ("[navigation/envs.md](navigation/envs.md), by `offbench perf envs --tasks "
              "pointmaze-umaze pointmaze-medium pointmaze-large antmaze-umaze antmaze-medium "
              "antmaze-large --out results/perf/navigation`")
# Env steps per timed call: enough for ~1 s of work on 2 cores, per engine.
STEPS_PER_CALL = {"mujoco": 8192, "mjx": 2048, "rollout": 8192}
# ...except the ant among the maze walls on MJX: at most ~40 steps/s on 2 cores at any batch,
# fewer in the larger mazes (every candidate wall contact is computed each step), so 2048 steps
# would take a minute or more per call.
MJX_ANTMAZE_STEPS_PER_CALL = 128


def steps_per_call(task: str, backend: str) -> int:
    if backend == "mjx" and task.startswith("antmaze"):
        return MJX_ANTMAZE_STEPS_PER_CALL
    return STEPS_PER_CALL[backend]


def _median_rate(fn: Callable[[], None], steps: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return steps / statistics.median(times)


def bench_offbench(task: str, backend: str, batch: int, repeats: int, yardstick: bool = True
                   ) -> list[dict]:
    """offbench's env steps/s (random actions, `batch` envs vmapped) and the compile time of
    the measured program; on the C backend also the MuJoCo rollout replay of the same rows
    (`yardstick`)."""
    env = envs.make(task, backend)
    horizon = max(4, steps_per_call(task, backend) // batch)
    lo, hi = env.unwrapped.action_bounds

    def run(key, record_inputs=False):
        state = jax.vmap(env.reset)(jax.random.split(key, batch))

        def body(state, k):
            action = jax.random.uniform(k, (batch, env.action_size), minval=lo, maxval=hi)
            before = state.pipeline_state
            state = jax.vmap(env.step)(state, action)
            if record_inputs:  # exactly the rows the physics stepped
                return state, env.unwrapped.physics.pack_inputs(before, action)
            return state, state.reward
        return jax.lax.scan(body, state, jax.random.split(key, horizon))[1]

    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = jax.jit(run).lower(key).compile()
    compile_s = time.perf_counter() - start
    compiled(key).block_until_ready()  # warm-up (thread pools, allocations)
    ours = {"offbench": lambda: compiled(key).block_until_ready()}
    if backend != "mujoco" or not yardstick:
        rate = _median_rate(ours["offbench"], horizon * batch, repeats)
        return [{"engine": f"offbench/{backend}", "compile_s": compile_s, "env_steps_per_s": rate}]
    # The yardstick replays exactly the rows our program stepped, and is timed interleaved with
    # it (ABAB...): this machine's speed drifts by up to 2x within seconds, and a ratio of two
    # runs minutes apart measured the drift more than the backends.
    recorded = np.asarray(jax.jit(run, static_argnums=1)(key, True), np.float64)
    rates = _interleaved_rates(ours, _replay_calls(env.unwrapped.physics, list(recorded)),
                               horizon * batch, repeats)
    return [{"engine": f"offbench/{backend}", "compile_s": compile_s,
             "env_steps_per_s": rates["offbench"]},
            {"engine": "rollout/replay", "compile_s": float("nan"),
             "env_steps_per_s": max(v for k, v in rates.items() if k.startswith("replay"))}]


def bench_step_compile(task: str, backend: str) -> dict:
    """Cold compile of `jit(step)` for one environment: the issue's "compiling step" target.

    The rows of `bench_offbench` also time the compile of the whole measured program
    (vmap over the batch, scan over steps, reset and random actions), which is larger.
    """
    env = envs.make(task, backend)
    state = env.reset(jax.random.key(0))
    action = jnp.zeros(env.action_size, jnp.float32)
    start = time.perf_counter()
    jax.jit(env.step).lower(state, action).compile()
    return {"engine": f"offbench/{backend} step", "batch": 1,
            "compile_s": time.perf_counter() - start, "env_steps_per_s": float("nan")}


def _interleaved_rates(calls: dict[str, Callable[[], None]],
                       rollout_calls: tuple[mujoco.MjModel, Callable], steps: int, repeats: int
                       ) -> dict[str, float]:
    """Median steps/s of every call, each repeat timing them one after another; the rollout
    call runs once per thread setting (see `_best_rollout_rate`), named replay/<nthread>."""
    model, call = rollout_calls
    runners = {}
    with contextlib.ExitStack() as stack:
        for nthread in sorted({0, os.cpu_count() or 1}):
            runner = stack.enter_context(rollout.Rollout(nthread=nthread))
            datas = [mujoco.MjData(model) for _ in range(max(nthread, 1))]
            runners[f"replay/{nthread}"] = lambda r=runner, d=datas: call(r, d)
            runners[f"replay/{nthread}"]()  # warm-up
        calls = {**calls, **runners}
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: steps / statistics.median(t) for name, t in times.items()}


def _best_rollout_rate(model: mujoco.MjModel, call: Callable, steps: int, repeats: int
                       ) -> float:
    """Env steps/s of `call(runner, datas)` with rollout's best thread setting: its pool on all
    cores, or no pool (the calling thread; faster for small batches on this machine)."""
    best = 0.0
    for nthread in sorted({0, os.cpu_count() or 1}):
        datas = [mujoco.MjData(model) for _ in range(max(nthread, 1))]
        with rollout.Rollout(nthread=nthread) as runner:
            call(runner, datas)  # warm-up
            best = max(best, _median_rate(lambda r=runner, d=datas: call(r, d), steps, repeats))
    return best


def _replay_calls(physics, packed: list[np.ndarray]) -> tuple[mujoco.MjModel, Callable]:
    """mujoco.rollout on the recorded (state, action) batches of our C backend."""
    calls = [physics.rollout_inputs(batch) for batch in packed]

    def replay(runner, datas):
        for initial, ctrl, warm in calls:
            runner.rollout(physics.model, datas, initial, ctrl, nstep=physics.frame_skip,
                           initial_warmstart=warm)
    return physics.model, replay


def _random_initial_states(task: str, batch: int
                           ) -> tuple[mujoco.MjModel, np.ndarray, int]:
    """The task's model, `batch` of its reset states (full physics) and its frame skip."""
    env = envs.make(task, "mujoco", wrap=False)
    model = env.model
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    states = np.zeros((batch, mujoco.mj_stateSize(model, spec)))
    data = mujoco.MjData(model)
    reset = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), batch))
    for i in range(batch):
        data.qpos[:] = np.asarray(reset.pipeline_state.qpos[i])
        data.qvel[:] = np.asarray(reset.pipeline_state.qvel[i])
        mujoco.mj_getState(model, data, states[i], spec)
    return model, states, env.physics.frame_skip


def bench_rollout(task: str, batch: int, repeats: int) -> list[dict]:
    model, states, frame_skip = _random_initial_states(task, batch)
    horizon = max(4, STEPS_PER_CALL["rollout"] // batch)
    rng = np.random.default_rng(0)
    lo, hi = model.actuator_ctrlrange.T
    controls = rng.uniform(lo, hi, (batch, horizon, model.nu)).repeat(frame_skip, axis=1)
    nstep = horizon * frame_skip

    def open_loop(runner, datas):
        runner.rollout(model, datas, states, controls, nstep=nstep)

    def per_step(runner, datas):
        state = states
        for t in range(horizon):
            ctrl = controls[:, t * frame_skip:(t + 1) * frame_skip]
            out, _ = runner.rollout(model, datas, state, ctrl, nstep=frame_skip)
            state = out[:, -1]

    return [{"engine": name, "compile_s": float("nan"),
             "env_steps_per_s": _best_rollout_rate(model, fn, horizon * batch, repeats)}
            for name, fn in (("rollout/open-loop", open_loop), ("rollout/per-step", per_step))]


def bench_gymnasium(task: str, seconds: float = 2.0) -> dict:
    import gymnasium

    if envs.get_spec(task).gymnasium_id not in gymnasium.registry:  # the maze tasks
        import gymnasium_robotics

        gymnasium.register_envs(gymnasium_robotics)
    env = gymnasium.make(envs.get_spec(task).gymnasium_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        steps += 200
    rate = steps / (time.perf_counter() - start)
    return {"engine": "gymnasium", "batch": 1, "compile_s": float("nan"), "env_steps_per_s": rate}


def run(tasks: list[str], backends: list[str], batches: list[int], repeats: int,
        log: Callable[[str], None] = print, mjx_tasks: list[str] | None = None
        ) -> pd.DataFrame:
    """mjx_tasks: the tasks measured on MJX too (None: all); the others on the C backend only."""
    measure_cold_compiles()
    rows = []
    for task in tasks:
        task_backends = [b for b in backends if b != "mjx" or mjx_tasks is None
                         or task in mjx_tasks]
        for backend in task_backends:
            row = bench_step_compile(task, backend)
            rows.append({"task": task, **row})
            log(f"{task:12s} {row['engine']:18s} compile {row['compile_s']:.1f} s")
        for batch in batches:
            for backend in task_backends:
                for row in bench_offbench(task, backend, batch, repeats):
                    rows.append({"task": task, "batch": batch, **row})
                    log(f"{task:12s} {row['engine']:18s} batch {batch:4d}: "
                        f"{row['env_steps_per_s']:9.0f} steps/s, compile {row['compile_s']:.1f} s")
            for row in bench_rollout(task, batch, repeats):
                rows.append({"task": task, "batch": batch, **row})
                log(f"{task:12s} {row['engine']:18s} batch {batch:4d}: "
                    f"{row['env_steps_per_s']:9.0f} steps/s")
        row = bench_gymnasium(task)
        rows.append({"task": task, **row})
        log(f"{task:12s} {'gymnasium':18s} batch    1: {row['env_steps_per_s']:9.0f} steps/s")
    return pd.DataFrame(rows)


def checks(df: pd.DataFrame) -> pd.DataFrame:
    """The performance targets of the foundation issue, evaluated on this run's numbers."""
    rate = df.pivot_table(index=["task", "batch"], columns="engine", values="env_steps_per_s")
    rows = []
    for (task, batch), r in rate.iterrows():
        if batch >= 16 and "offbench/mujoco" in r:
            for ref in ("rollout/replay", "rollout/open-loop"):
                ratio = r["offbench/mujoco"] / r[ref]
                rows.append({"target": f"C backend >= 0.8x {ref}", "task": task,
                             "batch": batch, "value": ratio, "pass": ratio >= 0.8})
        # a task measured on the C backend only (--mjx-tasks) has no MJX rate to compare
        if batch == 16 and pd.notna(r.get("offbench/mjx")) and "offbench/mujoco" in r:
            ratio = r["offbench/mujoco"] / r["offbench/mjx"]
            rows.append({"target": "C backend >= 5x MJX at batch 16", "task": task,
                         "batch": batch, "value": ratio, "pass": ratio >= 5})
    # The target is on compiling `step`; the whole batched program's compile is
    # reported beside it (informational: it also compiles vmap, scan, reset, random actions).
    for _, r in df[df.engine.str.startswith("offbench/")].iterrows():
        what = "compile step" if r.engine.endswith(" step") else "compile batched program"
        rows.append({"target": f"{what} <= 30 s ({r.engine.removesuffix(' step')})",
                     "task": r.task, "batch": r.batch, "value": r.compile_s,
                     "pass": r.compile_s <= 30})
    return pd.DataFrame(rows)


def write_report(df: pd.DataFrame, out: Path, prov: dict | None = None) -> None:
    """prov: `offbench.provenance.record()` taken when the run started (the code that ran)."""
    out.mkdir(parents=True, exist_ok=True)
    prov = prov or record()
    write_text_atomic(out / "envs.csv", df.to_csv(index=False, float_format="%.4g"))
    table = df.pivot_table(index=["task", "engine"], columns="batch", values="env_steps_per_s"
                           ).dropna(how="all")
    table.columns = [f"batch {b}" for b in table.columns]
    compile_s = df.pivot_table(index=["task", "engine"], columns="batch", values="compile_s")
    compile_s.columns = [f"compile s, batch {b}" for b in compile_s.columns]
    check = checks(df)
    m = prov["machine"]
    lines = [
        "# Environment throughput (env steps per second)", "",
        f"Produced by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, JAX backend `{m['jax_backend']}`; versions: "
        + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()) + ".", "",
        "Medians of repeated timed calls (`block_until_ready`); CPU timings vary up to 2x between",
        "identical runs here, so read ratios rather than absolute numbers. Every offbench number",
        "includes auto-reset and drawing random actions inside the compiled program. The C",
        "backend also computes contact forces (`mj_rnePostConstraint`) for Ant, which",
        "`mujoco.rollout` does not.", "",
    ]
    lines += [""]
    lines += ["| engine | meaning |", "|---|---|",
              "| offbench/mujoco | our C-engine backend: `jit(scan(vmap(step)))`, auto-reset |",
              "| offbench/mjx | the same program on the MJX backend |",
              "| rollout/replay | `mujoco.rollout` on exactly the states and actions our C backend"
              " stepped, once per env step (identical work: the yardstick for callback overhead) |",
              "| rollout/per-step | `mujoco.rollout` once per env step, its own random rollout |",
              "| rollout/open-loop | `mujoco.rollout`, all steps in one call (engine best case) |",
              "| gymnasium | Gymnasium's v5 env, one env stepped from Python |", ""]
    if not any(isinstance(envs.get_spec(t), envs.MazeSpec) for t in df.task.unique()):
        lines += [f"The navigation tasks are measured apart: {NAVIGATION}.", ""]
    lines += ["## Env steps per second", "", table.to_markdown(floatfmt=".0f"), "",
              "## Compile time (s)", "",
              "`offbench/B step`: `jit(step)` for one env (the foundation issue's target);",
              "`offbench/B` at batch N: the whole measured program (`vmap` over N envs, `scan`,",
              "reset and random actions). Cold compiles (persistent cache off).", "",
              compile_s.dropna(how="all").to_markdown(floatfmt=".1f"), "",
              "## Targets", "", check.to_markdown(index=False, floatfmt=".2f"), ""]
    write_text_atomic(out / "envs.md", "\n".join(lines))
