"""Online-loop throughput: SAC (UTD 1, batch 256, 2x256 nets) env steps/s for 1 and 4 vmapped
seeds on the C backend, where the time goes, and brax's own SAC trainer on the same task and
budget."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import pandas as pd

from offbench.io import write_text_atomic
from offbench.loops import online
from offbench.perf import measure_cold_compiles, timed
from offbench.provenance import record


def bench_offbench(task: str, seeds: int, env_steps: int, repeats: int) -> list[dict]:
    from offbench_baselines import sac

    cfg = online.OnlineConfig(env_steps=env_steps, warmup_steps=0, eval_every=env_steps,
                              eval_episodes=1, checkpoint_every=env_steps, backend="mujoco")
    problem = online.Problem(sac, sac.Config(), task, cfg)
    keys = jax.numpy.stack([jax.random.PRNGKey(s) for s in range(seeds)])
    carry = jax.jit(jax.vmap(lambda k: online.init_carry(problem, k)))(keys)
    first = jax.numpy.asarray(0, jax.numpy.int32)
    start = time.perf_counter()
    chunk = jax.jit(jax.vmap(online.make_chunk(problem, 1), in_axes=(0, None)))
    compiled = chunk.lower(carry, first).compile()
    compile_s = time.perf_counter() - start
    total_s = timed(lambda: compiled(carry, first), repeats)

    # where the time goes: the same pieces compiled alone
    no_learning = dataclasses.replace(cfg, warmup_steps=env_steps)
    env_problem = online.Problem(sac, sac.Config(), task, no_learning)
    env_chunk = jax.jit(jax.vmap(online.make_chunk(env_problem, 1), in_axes=(0, None)))
    env_s = timed(lambda: env_chunk(carry, first), repeats)
    evaluate = jax.jit(jax.vmap(lambda a, k: online.evaluate(problem, a, k)))
    eval_s = timed(lambda: evaluate(carry.algo, keys), repeats)
    steps = seeds * env_steps
    return [{"engine": "offbench", "task": task, "seeds": seeds, "env_steps_per_s": steps / total_s,
             "per_seed_env_steps_per_s": env_steps / total_s, "compile_s": compile_s,
             "total_s": total_s, "env_and_replay_s": env_s - eval_s, "eval_s": eval_s,
             "updates_s": total_s - env_s}]


def bench_brax_sac(task: str, env_steps: int) -> dict:
    """brax.training's SAC on our env (brax's wrappers), same budget, UTD 1, batch 256."""
    from brax.training.agents.sac import train as brax_sac

    import offbench.envs as envs

    env = envs.make(task, "mujoco", wrap=False)
    times: dict[str, float] = {}

    def progress(step, metrics):
        times[step] = time.perf_counter()

    start = time.perf_counter()
    # 3 evaluations split training into 2 epochs: the first one compiles, the second is timed
    # (it includes one brax evaluation of 1000 steps, as ours includes one of ours).
    brax_sac.train(environment=env, num_timesteps=2 * env_steps, episode_length=1000,
                   num_envs=1, batch_size=256, grad_updates_per_step=1, min_replay_size=0,
                   max_replay_size=2 * env_steps, num_evals=3, learning_rate=3e-4,
                   discounting=0.99, progress_fn=progress, seed=0)
    total = time.perf_counter() - start
    steps = sorted(times)
    epoch_steps = steps[-1] - steps[-2]
    train_s = times[steps[-1]] - times[steps[-2]]
    return {"engine": "brax.training SAC", "task": task, "seeds": 1,
            "env_steps_per_s": epoch_steps / train_s,
            "per_seed_env_steps_per_s": epoch_steps / train_s,
            "compile_s": float("nan"), "total_s": total}


def run(task: str, env_steps: int, repeats: int, log=print) -> pd.DataFrame:
    measure_cold_compiles()
    rows = []
    for seeds in (1, 4):
        rows += bench_offbench(task, seeds, env_steps, repeats)
        log(rows[-1])
    rows.append(bench_brax_sac(task, env_steps))
    log(rows[-1])
    return pd.DataFrame(rows)


def write_report(df: pd.DataFrame, out: Path, prov: dict) -> None:
    write_text_atomic(out / "online.csv", df.to_csv(index=False, float_format="%.4g"))
    ours = df[df.engine == "offbench"].set_index("seeds")
    brax = df[df.engine != "offbench"].iloc[0]
    lines = [
        "# Online loop throughput (SAC, UTD 1, batch 256, 2x256 nets, C backend)", "",
        f"Produced by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores.", "",
        "Medians of repeated runs of one compiled chunk (no warm-up: updates from the first "
        "step; one 1000-step evaluation episode per run). Time split from the same pieces "
        "compiled alone: env stepping and replay (the loop with updates switched off, minus "
        "evaluation), evaluation, updates (the rest). brax: its SAC trainer on our env (C "
        "backend, brax's own wrappers), timed over its second training epoch (after compile).",
        "On 2 CPU cores one seed's 2x256 update already keeps both cores busy, so more vmapped "
        "seeds add total throughput (fewer, larger kernels) but cannot keep per-seed speed.",
        "", df.to_markdown(index=False, floatfmt=".3g"), "",
        f"- Per-seed env steps/s, 4 vmapped seeds vs 1: "
        f"{ours.loc[4].per_seed_env_steps_per_s / ours.loc[1].per_seed_env_steps_per_s:.2f}x",
        f"- offbench (1 seed) vs brax's SAC trainer: "
        f"{ours.loc[1].env_steps_per_s / brax.env_steps_per_s:.2f}x; 4 seeds vs brax: "
        f"{ours.loc[4].env_steps_per_s / brax.env_steps_per_s:.2f}x", ""]
    write_text_atomic(out / "online.md", "\n".join(lines))


def main(task: str, env_steps: int, repeats: int, out: Path) -> None:
    started = record()  # the commit of the code that runs
    df = run(task, env_steps, repeats)
    write_report(df, out, started)
