"""The `offbench` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import offbench
from offbench import provenance

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "tasks" / "sweeps"
DEFAULT_STORE = str(Path.home() / ".cache" / "offbench" / "store")


def cmd_tasks(args: argparse.Namespace) -> int:
    import offbench.envs as envs
    from offbench import policies

    default = envs.default_backend()
    wide = max(len(n) for n in envs.task_names())
    gym_wide = max(len(envs.get_spec(n).gymnasium_id) for n in envs.task_names())
    backends = ", ".join(b + (" (default)" if b == default else "") for b in envs.BACKENDS)
    # every env is built before the table prints, so MuJoCo's compiler warnings (printed once,
    # on stderr) come before it rather than between its rows
    rows = []
    for name in envs.task_names():
        env = envs.make(name, default, wrap=False)
        try:
            refs = " ".join(f"{r:9.1f}" for r in policies.reference_scores(name))
        except FileNotFoundError:  # a task without committed behaviour policies
            refs = f"{'-':>9s} {'-':>9s}"
        rows.append(f"{name:{wide}s} {env.spec.gymnasium_id:{gym_wide}s} "
                    f"{env.observation_size:4d} {env.action_size:4d} "
                    f"{env.spec.episode_length:6d} {refs}  {backends}")
    sys.stderr.flush()
    print(f"{'task':{wide}s} {'gymnasium':{gym_wide}s} {'obs':>4s} {'act':>4s} {'steps':>6s} "
          f"{'ref_min':>9s} {'ref_max':>9s}  backends")
    print("\n".join(rows))
    print("\nref_min/ref_max: the reference scores normalized scores use (mean return of uniform "
          "random actions / of the expert policy; tasks/policies/TASK/policies.json; navigation "
          "tasks: 0 / 1, so the score is 100 x the success rate)")
    print(f"dynamics overrides (scale factors): {', '.join(envs.DYNAMICS_OVERRIDES)}")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    import offbench.envs as envs
    from offbench.perf import envs as perf_envs

    if args.suite == "offline":
        from offbench.perf import offline as perf_offline

        task = (args.tasks or ["halfcheetah"])[0]
        envs.get_spec(task)
        perf_offline.main(task, args.updates, args.repeats, Path(args.out), args.algorithms)
        print(f"wrote {Path(args.out) / 'offline.md'} and offline.csv")
        return 0
    if args.suite == "o2o":
        from offbench.perf import o2o as perf_o2o

        task = (args.tasks or ["halfcheetah"])[0]
        envs.get_spec(task)
        perf_o2o.main(task, args.env_steps, args.repeats, Path(args.out))
        print(f"wrote {Path(args.out) / 'o2o.md'} and o2o.csv")
        return 0
    if args.suite == "online":
        from offbench.perf import online as perf_online

        task = (args.tasks or ["halfcheetah"])[0]
        envs.get_spec(task)
        perf_online.main(task, args.env_steps, args.repeats, Path(args.out))
        print(f"wrote {Path(args.out) / 'online.md'} and online.csv")
        return 0
    tasks = args.tasks or envs.task_names()
    for t in tasks:
        envs.get_spec(t)
    from offbench.provenance import record

    started = record()  # the commit of the code that runs, not of the tree when it ends
    for t in args.mjx_tasks or []:
        envs.get_spec(t)
    df = perf_envs.run(tasks, args.backends, args.batches, args.repeats,
                       mjx_tasks=args.mjx_tasks)
    perf_envs.write_report(df, Path(args.out), started)
    print(f"wrote {Path(args.out) / 'envs.md'} and envs.csv")
    return 0


def cmd_train_online(args: argparse.Namespace) -> int:
    import dataclasses

    import offbench.envs as envs
    from offbench.algorithms import apply_overrides, load_algorithm
    from offbench.loops import driver, online

    algo = load_algorithm(args.algorithm)
    envs.get_spec(args.task)
    algo_config = apply_overrides(algo.Config(), args.set or [])
    if args.utd is not None and hasattr(algo_config, "utd"):
        algo_config = dataclasses.replace(algo_config, utd=args.utd)  # RLPD's actor schedule
    utd = args.utd or getattr(algo_config, "utd", 1)
    defaults = online.OnlineConfig()
    config = dataclasses.replace(
        defaults, env_steps=args.env_steps, num_envs=args.num_envs,
        warmup_steps=args.warmup_steps, utd=utd,
        eval_every=args.eval_every or driver.default_eval_every(defaults.eval_every,
                                                                 args.env_steps),
        eval_episodes=args.eval_episodes or defaults.eval_episodes,
        checkpoint_every=args.checkpoint_every or defaults.checkpoint_every,
        backend=args.backend, episode_length=args.episode_length)
    config.validate()
    out = Path(args.out or f"runs/online/{args.algorithm}-{args.task}")
    df = online.train(args.algorithm, args.task, args.seeds, config, algo_config, out,
                      resume=args.resume, first_seed=args.first_seed,
                      snapshot=_policy_snapshot(algo) if args.snapshots else None,
                      seed_group=_resolve_seed_group(args, args.algorithm))
    final = df[df.period == df.period.max()]
    from offbench.harness.cells import seeds_phrase

    print(f"final eval return over {seeds_phrase(args.seeds)}: {final.eval_return.mean():.1f} "
          f"(per seed: {', '.join(f'{r:.1f}' for r in final.eval_return)}); "
          f"metrics in {out / 'metrics.csv'}")
    return 0


# `offbench run` flags -> budget keys: offline's, and those of the o2o/hybrid loop
RUN_BUDGET_FLAGS = {"updates": "--updates", "eval_every": "--eval-every",
                    "eval_episodes": "--eval-episodes", "checkpoint_every": "--checkpoint-every",
                    "episode_length": "--episode-length", "offline_updates": "--offline-updates",
                    "online_steps": "--online-steps", "offline_ratio": "--offline-ratio",
                    "utd": "--utd", "num_envs": "--num-envs", "warmup_steps": "--warmup-steps",
                    "threshold": "--threshold", "sampler": "--sampler",
                    "sampler_temperature": "--sampler-temperature"}
OFFLINE_ONLY = {"updates", "sampler", "sampler_temperature"}
MIXED_ONLY = {"offline_updates", "online_steps", "offline_ratio", "utd", "num_envs",
              "warmup_steps", "threshold"}


def cmd_run(args: argparse.Namespace) -> int:
    """One cell through the sweep machinery (cells.resolve, cells.run_cell) into --out."""
    from offbench.algorithms import load_algorithm
    from offbench.harness import cells
    from offbench.harness.store import CellDir
    from offbench.loops import driver
    from offbench.loops.o2o import MIXED_MODES

    table = {key: getattr(args, key) for key in RUN_BUDGET_FLAGS
             if getattr(args, key) is not None}
    wrong = sorted(table.keys() & (MIXED_ONLY if args.mode == "offline" else
                                   OFFLINE_ONLY if args.mode in MIXED_MODES else set()))
    if wrong:
        flags = ", ".join(RUN_BUDGET_FLAGS[k] for k in wrong)
        raise ValueError(f"{flags} only apply with --mode o2o or hybrid" if args.mode == "offline"
                         else f"{flags} only applies with --mode offline (o2o and hybrid count "
                              "--offline-updates and --online-steps)")
    items = list(args.set or [])
    if args.utd is not None and "utd" in {f.name for f in dataclasses.fields(
            load_algorithm(args.algorithm).Config)} and not any(
            i.startswith("utd=") for i in items):
        items.append(f"utd={args.utd}")  # the algorithm's UTD is the loop's (RLPD)
    config = cells.resolve(args.algorithm, args.dataset, args.mode, items=items, budget=table,
                           backend=args.backend, seeds=args.seeds, first_seed=args.first_seed)
    seed_group = _resolve_seed_group(args, args.algorithm)
    driver.check_seed_group(args.seeds, seed_group, driver.seed_device_count(args.seeds))
    dataset = cells.load_dataset(config, args.root)  # a missing dataset fails here
    name = args.dataset.replace("/", "_").replace(":", "_")
    out = Path(args.out or f"runs/{args.mode}/{args.algorithm}-{name}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run")
    if not args.resume and ((out / "metrics.csv").exists() or (out / "checkpoints").exists()):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose "
                         "another --out")
    cell = cells.Cell(config, seed_group=seed_group, data_root=args.root, dataset=dataset)
    error = cells.run_cell(cell, CellDir(out), resume=args.resume, log=print,
                           raise_bad_input=True)
    if error is not None:
        print(f"offbench run: error: {error} (traceback in {out / 'status.json'})",
              file=sys.stderr)
        return 1
    _print_run_summary(out, args.mode, args.seeds, args.threshold)
    return 0


def _print_run_summary(out: Path, mode: str, seeds: int, threshold: float | None) -> None:
    import pandas as pd

    from offbench.harness.cells import seeds_phrase

    if mode == "offline":
        df = pd.read_csv(out / "metrics.csv")
        final = df[df.period == df.period.max()].sort_values("seed")
        best = df.groupby("seed").normalized_score.max()
        diverged = int((final.diverged > 0).sum())
        print(f"normalized score over {seeds_phrase(seeds)}: "
              f"last {final.normalized_score.mean():.1f} ± "
              f"{final.normalized_score.std(ddof=0):.1f}, best {best.mean():.1f}"
              + (f"; {diverged} seed(s) diverged" if diverged else "")
              + f"; metrics in {out / 'metrics.csv'}")
        return
    per_seed = json.loads((out / "run.json").read_text()).get("per_seed", {})
    keys = (("pretrain_score", "dip", "final_score", "regret") if mode == "o2o"
            else ("final_score", "steps_to_threshold") if threshold is not None
            else ("last_score",))
    for seed, entry in per_seed.items():
        print(f"seed {seed}: " + ", ".join(f"{k} {entry.get(k, entry.get('last_score'))}"
                                           for k in keys))
    print(f"metrics in {out / 'metrics.csv'}")


def _policy_snapshot(algo):
    from offbench.algorithms import contract

    if contract(algo).policy_params is None:
        raise ValueError(f"--snapshots needs `policy_params(state)` in {algo.__name__} "
                         "(the parameters its policy acts with)")
    return algo.policy_params


def cmd_report_online(args: argparse.Namespace) -> int:
    from offbench.reports import online as report

    runs = _run_dirs(args.runs, "metrics.csv", "an online run folder")
    report.write_report(runs, Path(args.out), args.title)
    print(f"wrote {args.out}")
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    import offbench.envs as envs
    from offbench import policies

    if args.action == "list":
        df = policies.reference_table()
        print(df.to_string(index=False) if len(df) else "no behaviour policies committed yet; "
              "run `make policies`")
        return 0
    if not args.tasks:
        raise ValueError("name the tasks to select policies for, e.g. "
                         "`offbench policies select hopper --runs RUNS`")
    for task in args.tasks:
        envs.get_spec(task)
    command = args.command_line
    for task in args.tasks:
        if task == "ant-waypoint":  # the AntMaze datasets' navigation controller
            from offbench.data import antmaze

            antmaze.select(Path(args.runs) / task, seed=args.seed, command=command)
            continue
        policies.select(task, Path(args.runs) / task, seed=args.seed, command=command)
    return 0


def _dataset_names(args: argparse.Namespace) -> list:
    from offbench import data

    size = data.ids.parse_size(args.size) if args.size else None
    if args.all:
        return [data.DatasetName(t, k, size or data.DEFAULT_SIZE) for t in _dataset_tasks()
                for k in data.ids.kinds(t)]
    if not args.ids:
        raise ValueError("name datasets to build (e.g. hopper-medium) or pass --all")
    return [data.parse(i, size) for i in args.ids]


def offbench_tasks_dir() -> Path:
    from offbench.envs.spec import TASKS_DIR

    return TASKS_DIR


def cmd_datasets(args: argparse.Namespace) -> int:
    from offbench import data

    if args.action == "list":
        import offbench.envs as envs

        built = set(data.local_datasets(args.root))
        print(f"data root: {data.data_root(args.root)}")
        for task in envs.task_names():
            for kind in data.ids.kinds(task):  # AntMaze: none yet
                name = data.DatasetName(task, kind)
                sizes = sorted(b for b in built if b == name.short or b.startswith(name.short
                                                                                   + "-"))
                sizes = [b for b in sizes if data.parse(b).kind == kind]
                print(f"  {name.short:28s} {'built: ' + ', '.join(sizes) if sizes else '-'}")
        return 0
    if args.action == "build":
        command = args.command_line
        for name in _dataset_names(args):
            data.build(name, seed=args.seed, root=args.root, command=command, force=args.force)
        return 0
    if args.action == "info":
        import json

        import numpy as np

        import offbench.envs as envs
        from offbench.data import stats
        from offbench.reports import datasets as report

        for dataset_id in args.ids:
            ds = data.load(dataset_id, args.root)
            meta = ds.metadata
            ref_min, ref_max = meta["ref_min"], meta["ref_max"]
            summary = stats.summary(np.asarray(ds.rewards), np.asarray(ds.terminals),
                                    meta["episode_lengths"], ref_min, ref_max,
                                    envs.get_spec(ds.task).episode_length)
            extras = report.variant_extras(ds, args.root)  # transforms, SACo
            print(json.dumps({"id": dataset_id, "task": ds.task, "path": meta["path"], **extras,
                              **summary, "ref_min": ref_min, "ref_max": ref_max,
                              "build": meta["build"]}, indent=2, default=str))
        return 0
    if args.action == "report":
        from offbench.reports import datasets as report

        if any("+" in i for i in args.ids):  # variants: a table of exactly these ids
            out = Path(report.VARIANTS_OUT if args.out == "results/datasets.md" else args.out)
            report.write_variants_report(args.ids, out, args.command_line, args.root)
            print(f"wrote {out} and {out.with_suffix('.csv')}")
            return 0
        size = data.ids.parse_size(args.size) if args.size else data.DEFAULT_SIZE
        names = _dataset_names(args) if (args.ids or args.all) else None
        tasks = sorted({n.task for n in names}) if names else _dataset_tasks()
        df = report.table(tasks, size, args.root)
        report.write_report(df, Path(args.out), args.command_line, size)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.csv')}")
        return 0
    raise ValueError(f"unknown datasets action '{args.action}'")


def _dataset_tasks() -> list[str]:
    """Tasks whose datasets can be built: those with behaviour policies, and the navigation
    tasks whose kind is a scripted controller (PointMaze's maze2d)."""
    import offbench.envs as envs
    from offbench import data

    with_policies = set(_policy_tasks())
    return [t for t in envs.task_names() if t in with_policies
            or (isinstance(envs.get_spec(t), envs.MazeSpec) and data.ids.kinds(t))]


def _policy_tasks() -> list[str]:
    import offbench.envs as envs

    return [t for t in envs.task_names() if (offbench_tasks_dir() / "policies" / t).exists()]


def _run_dirs(paths: list[str], required: str, what: str) -> list[Path]:
    runs = [Path(r) for r in paths]
    for r in runs:
        if not (r / required).exists():
            raise ValueError(f"{r} has no {required}: not {what}")
    return runs


def _selected_runs(args: argparse.Namespace, command: str) -> list[Path]:
    """Run folders given as paths, or the cells `--sweep NAME`s ran (optionally --datasets)."""
    if bool(args.runs) == bool(args.sweep):
        raise ValueError(f"{command}: give run folders, or --sweep NAME (with --store) for "
                         "the cells a sweep ran into a results store, not both")
    if not args.sweep:
        return _run_dirs(args.runs, "run.json", "a run folder (from `offbench run`)")
    from offbench.harness.store import Store, sweep_cells

    label = f"sweep '{args.sweep[0]}'" if len(args.sweep) == 1 else None
    cells = sweep_cells(Store(args.store), args.sweep, label=label, datasets=args.datasets)
    return [c.path for c in cells]


def cmd_report_offline(args: argparse.Namespace) -> int:
    from offbench.reports import offline as report

    report.write_report(_selected_runs(args, "report-offline"), Path(args.out), args.budget,
                        args.title)
    print(f"wrote {args.out}")
    return 0


def cmd_report_robustness(args: argparse.Namespace) -> int:
    from offbench.reports import robustness

    robustness.write_report(_selected_runs(args, "report-robustness"), Path(args.out),
                            args.budget, args.title, reps=args.reps)
    print(f"wrote {args.out}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from offbench.reports import probe

    runs = probe.with_critics(_selected_runs(args, "probe"))
    if not runs:
        raise ValueError("probe: none of these runs has a critic to probe")
    if args.out:
        table = probe.write_report(runs, Path(args.out), args.samples, args.title)
        print(f"wrote {args.out}")
    else:
        table = probe.probe_runs(runs, args.samples)
    print(probe.summary(table).round(2).to_string(index=False))
    return 0


def _thresholds(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        dataset, eq, value = item.rpartition("=")
        if not eq or not dataset:
            raise ValueError(f"--threshold '{item}' is not DATASET=SCORE")
        out[dataset] = float(value)
    return out


def cmd_report_mixed(args: argparse.Namespace) -> int:
    from offbench.reports import mixed

    title = {"title": args.title} if args.title else {}  # else the report's own default
    if args.command == "report-o2o":
        mixed.write_o2o(args.store, args.sweep, Path(args.out), args.budget, **title)
    else:
        mixed.write_hybrid(args.store, args.sweep, Path(args.out), args.budget,
                           _thresholds(args.threshold), **title)
    print(f"wrote {args.out}")
    return 0


def _run_sweep(spec: dict, args: argparse.Namespace) -> tuple[int, set[str], int]:
    """One spec's cells into the store: (exit status, the names of the cells it asked for, how
    many of them were complete before)."""
    from offbench.harness import sweep
    from offbench.harness.store import Store

    store = Store(args.store)
    for flag, path in (("--store", args.store), ("--out", getattr(args, "out", None))):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ValueError(f"{flag} {path} is a file; give a folder")
    ray_options = None
    if args.ray_address and args.executor != "ray":  # not silently a local run
        raise ValueError("--ray-address needs --executor ray")
    if args.executor == "ray":
        from offbench.harness.ray_executor import RayOptions

        ray_options = RayOptions(args.ray_address, args.ray_cpus_per_cell,
                                 args.ray_gpus_per_cell)
    result = sweep.run_sweep(spec, store, resume=args.resume, executor=args.executor,
                             ray_options=ray_options,
                             seed_group=args.seed_group)
    print(f"sweep '{spec['name']}': {len(result.ran)} cell(s) ran, {len(result.skipped)} "
          f"complete before, {len(result.failed)} failed; store {store.root}")
    for name, error in result.failed.items():
        print(f"  failed: {name}: {error} (traceback in {store.cells_dir / name / 'status.json'})")
    return (1 if result.failed else 0), {*result.ran, *result.skipped, *result.failed}, len(
        result.skipped)


def _sweep_and_report(spec: dict, args: argparse.Namespace, leaderboard: bool = True) -> int:
    status, cells, _ = _run_sweep(spec, args)
    if leaderboard and getattr(args, "out", None):
        from offbench.reports import leaderboard as board

        # exactly this sweep's cells: not stale cells of an older dataset version, nor other
        # sweeps' cells of the same profile (learning checks) that happen to share the store
        board.write_report(args.store, Path(args.out), profile=spec["profile"],
                           reps=args.reps, cells=cells)
    return status


def cmd_sweep(args: argparse.Namespace) -> int:
    from offbench.harness import sweep
    from offbench.reports import declared

    path = Path(args.spec)
    spec = sweep.load_spec(path)
    sweep.validate(spec, path)  # every problem (its [[report]] tables and needs too) in one error
    for needed in declared.needs(spec, path):  # and the specs it needs, before any of them runs
        sweep.validate(sweep.load_spec(needed), needed)
    reports = declared.parse(spec)
    if args.report and not reports:
        raise ValueError(f"--report: {path} declares no [[report]] table")
    if args.datasets:  # a subset of the spec: the same cells (and hashes) as the whole spec's
        unknown = sorted(set(args.datasets) - set(spec.get("datasets", [])))
        if unknown:
            raise ValueError(f"--datasets {unknown} not in the spec's datasets "
                             f"{spec.get('datasets')}")
        spec["datasets"] = [d for d in spec["datasets"] if d in args.datasets]
    status = 0
    for needed in declared.needs(spec, path):  # cells the reports read besides the spec's own
        print(f"sweep '{spec['name']}' needs {needed}: running it first")
        status |= _sweep_and_report(sweep.load_spec(needed), args, leaderboard=False)
    status |= _sweep_and_report(spec, args)
    if args.report:
        if status:
            raise ValueError("not writing the spec's reports: some cells failed (see above); "
                             "fix them and rerun with --resume")
        from offbench.harness.store import cell_name

        # the cells the whole specs ask for now (also with --datasets): not those the sweep ran
        # under an earlier version of its spec (other seeds or settings), which the store keeps
        # under the same name
        only = {cell_name(c.config) for _, s in sweep.with_needs(path)
                for c in sweep.expand(s, log=lambda *_: None)}
        declared.write(reports, args.store, only=only)
    return status


def resolve_profile(profile: str) -> str:
    """`auto`: cpu when JAX finds no accelerator, gpu (one accelerator, ~10 min) otherwise."""
    if profile != "auto":
        return profile
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "gpu"


def bench_profiles() -> list[str]:
    """The bench profiles: the specs in tasks/sweeps/ whose `profile` is their file's stem
    (cpu, gpu, full; the learning checks' specs belong to a profile, they are not one)."""
    import tomllib

    found = []
    for path in sorted(SWEEPS_DIR.glob("*.toml")):
        try:
            if tomllib.loads(path.read_text()).get("profile") == path.stem:
                found.append(path.stem)
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return found


def profile_spec(profile: str) -> tuple[str, Path]:
    """The profile `auto` resolves to and its spec file; one clear error for an unknown one."""
    profile = resolve_profile(profile)
    if profile not in bench_profiles():
        raise ValueError(f"unknown profile '{profile}'; profiles: "
                         f"{', '.join(bench_profiles())} or auto (cpu without an accelerator, "
                         f"else gpu); other specs in {SWEEPS_DIR} run with `offbench sweep "
                         "SPEC`")
    return profile, SWEEPS_DIR / f"{profile}.toml"


def cmd_bench(args: argparse.Namespace) -> int:
    """A profile's sweep, its sections first (the specs its `needs` names: the O2O and hybrid
    sections of tasks/sweeps/cpu.toml), then one leaderboard of all their cells, headed by the
    profile's `notes` and the time this run took."""
    import time

    from offbench.algorithms import load_algorithm
    from offbench.harness import sweep
    from offbench.reports import leaderboard as board

    started = time.time() if args.started_at is None else args.started_at
    profile, path = profile_spec(args.profile)
    sections = sweep.with_needs(path)
    spec = sections[0][1]
    for section_path, section in sections:
        if section.get("profile") != profile:
            raise ValueError(f"{section_path}" + (f" (needed by {path})" if section is not spec
                                                  else "") + " declares profile "
                             f"'{section.get('profile')}', not '{profile}'")
        # a submitted algorithm runs beside the profile's baselines in every section whose
        # modes it declares
        modes = section.get("modes", ["offline"])
        modes = [modes] if isinstance(modes, str) else modes
        added = [a for a in args.algos if set(modes) <= set(load_algorithm(a).MODES)]
        section["algorithms"] = list(dict.fromkeys([*section["algorithms"], *added]))
        sweep.validate(section, section_path)
    if args.out is None:  # a submission's leaderboard never overwrites the committed one
        args.out = str(submission_folder(args.algos)) if args.algos else "results"
    print(f"bench profile '{profile}' ({path}: {len(sections)} section(s)); store "
          f"{args.store}; leaderboard -> {args.out}")
    status, cells, reused = 0, set(), 0
    for _, section in sections:
        st, names, skipped = _run_sweep(section, args)
        status, cells, reused = status | st, cells | names, reused + skipped
    minutes = (time.time() - started) / 60
    timing = (f"This run (`make bench`, from its start: install check, datasets, training) took "
              f"{minutes:.1f} min on this machine" + (
                  f"; {reused} of its {len(cells)} cells were complete before it and were "
                  "reused, so this is not a from-scratch time." if reused else
                  f", every one of its {len(cells)} cells trained from scratch."))
    timing += _from_scratch_record(Path(args.store) / f"bench-{profile}.json", cells, minutes,
                                   fresh=not reused and not status)
    notes = "\n\n".join(n for n in (spec.get("notes", "").strip(), timing) if n)
    board.write_report(args.store, Path(args.out), profile=profile, reps=args.reps,
                       cells=cells, notes=notes)
    return status


def _from_scratch_record(path: Path, cells: set[str], minutes: float, fresh: bool) -> str:
    """A bench run that trained every cell from scratch records its time in the store (path);
    a later run that reuses exactly those cells cites it (its own time is then only the
    report's). Returns the sentence to add to the leaderboard's timing line."""
    from offbench.io import write_text_atomic

    if fresh:
        write_text_atomic(path, json.dumps({"minutes": round(minutes, 2), "cells": sorted(cells),
                                            **provenance.record()}, indent=1, default=str))
        return ""
    if not path.exists():
        return ""
    prior = json.loads(path.read_text())
    if set(prior.get("cells", [])) != cells:
        return ""
    return (f" The from-scratch run of these {len(cells)} cells took {prior['minutes']:.1f} min "
            f"(commit {str(prior.get('git_commit'))[:7]}, {prior.get('date')}; {path.name} in "
            "the store).")


def submission_folder(algos: list[str]) -> Path:
    """results/submissions/NAME/: where `bench --algos` writes its leaderboard by default
    (the submitted algorithms beside the profile's baselines; results/ itself is untouched)."""
    import re

    names = [re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(a).stem if a.endswith(".py") else a)
             for a in algos]
    return Path("results") / "submissions" / "+".join(names)


def cmd_report(args: argparse.Namespace) -> int:
    from offbench.reports import leaderboard

    leaderboard.write_report(Path(args.store), Path(args.out), profile=args.profile,
                             reps=args.reps)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from offbench.harness.store import Store, check_store

    store = Store(args.store)
    problems = check_store(store)
    total = sum(1 for p in store.cells_dir.iterdir() if p.is_dir())
    for name, problem, fix in problems:
        print(f"{name}: {problem}\n    fix: {fix}")
    print(f"store {store.root}: {total} cell(s), {total - len(problems)} healthy, "
          f"{len(problems)} incomplete or damaged")
    return 1 if problems else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from offbench import doctor

    profile, spec = profile_spec(args.profile)
    report = doctor.run(profile, spec, backend=args.backend, task=args.task,
                        algorithm=args.algorithm, batch=args.batch, updates=args.updates)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if report["ok"] else 1


def cmd_check(args: argparse.Namespace) -> int:
    from offbench.harness.check import check

    return 0 if check(args.module, args.set or [], updates=args.updates) else 1


def _count(text: str) -> int:
    """argparse type: a whole number >= 0 (a usage error naming the flag otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed_group(text: str) -> int | str:
    """argparse type of --seed-group: a whole number >= 1 or `auto`."""
    return "auto" if text == "auto" else _positive(text)


def _resolve_seed_group(args: argparse.Namespace, algorithm: str) -> int | None:
    """--seed-group auto -> the group offbench.harness.seedgroup chooses, said on stdout."""
    import jax

    from offbench.harness import seedgroup

    group, why = seedgroup.choose(args.seed_group, algorithm, args.seeds, jax.default_backend())
    if args.seed_group == "auto":
        print(f"--seed-group {why}")
    return group


SEED_GROUP_HELP = ("run the seeds in vmapped groups of N, one group after another in the same "
                   "program (a CPU speed knob: on 2 cores 8 SAC-N or EDAC seeds run faster in "
                   "groups of 2, results/perf/seed-groups/offline.md; default all seeds at once, "
                   "right for GPU/TPU); changes results only to float rounding. auto: all at "
                   "once on an accelerator, on CPU the fastest grouping in results/perf's "
                   "tables (offbench/harness/seedgroup.py); `bench` uses auto unless given")


def _add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """Options every training command shares (train-online, run)."""
    p.add_argument("--backend", choices=["mujoco", "mjx"], help="physics (default by device)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an algorithm config field (repeatable)")
    p.add_argument("--out", help=f"run folder (default {default_out})")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--seed-group", type=_seed_group, metavar="N", help=SEED_GROUP_HELP)


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=DEFAULT_STORE,
                   help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--resume", action="store_true",
                   help="skip complete cells, continue interrupted ones from their checkpoints")
    p.add_argument("--seed-group", type=_seed_group, metavar="N", help=SEED_GROUP_HELP)
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: cells one after another here; ray: one Ray task per cell")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="Ray cluster to send cells to (`auto`: the one this node is in; "
                        "default $RAY_ADDRESS, else a new local Ray instance); the store must "
                        "be on a filesystem every node mounts at the same path")
    p.add_argument("--ray-cpus-per-cell", type=float, default=1.0, metavar="N",
                   help="Ray CPUs one cell reserves (default 1)")
    p.add_argument("--ray-gpus-per-cell", type=float, default=0.0, metavar="N",
                   help="Ray GPUs one cell reserves (default 0; 1 on GPU nodes)")
    p.add_argument("--reps", type=int, default=5_000, help="bootstrap resamples (report)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offbench",
        description="Offline, offline-to-online and hybrid RL benchmarks on MuJoCo (MJX / C).")
    parser.add_argument("--version", action="version", version=f"offbench {offbench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tasks", help="list tasks with observation/action sizes and backends")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("train-online", help="train an algorithm online (e.g. SAC) on a task")
    p.add_argument("algorithm", help="algorithm name in baselines/ (e.g. sac) or module path")
    p.add_argument("task", help="task name (see `offbench tasks`)")
    p.add_argument("--seeds", type=_positive, default=1, help="seeds trained together (vmapped)")
    p.add_argument("--first-seed", type=_count, default=0)
    p.add_argument("--env-steps", type=_positive, default=1_000_000, help="env steps per seed")
    p.add_argument("--num-envs", type=_positive, default=1, help="training envs per seed")
    p.add_argument("--warmup-steps", type=_count, default=5000, help="random-action steps first")
    p.add_argument("--utd", type=_positive, help="updates per iteration (update-to-data; "
                                                "default: the algorithm's `utd`, else 1)")
    p.add_argument("--eval-every", type=_positive, help="env steps between evaluations (5000)")
    p.add_argument("--eval-episodes", type=_positive, help="episodes per evaluation (10)")
    p.add_argument("--checkpoint-every", type=_positive,
                   help="env steps between checkpoints (50000)")
    p.add_argument("--episode-length", type=_positive,
                   help="time limit (default: the task's, 1000)")
    _add_run_options(p, "runs/online/ALGO-TASK")
    p.add_argument("--snapshots", action="store_true",
                   help="save the policy's parameters after every evaluation (behaviour policies)")
    p.set_defaults(func=cmd_train_online)

    p = sub.add_parser("run", help="train an algorithm on a dataset (offline RL)")
    p.add_argument("algorithm", help="algorithm name in baselines/ (e.g. iql) or module path")
    p.add_argument("dataset", help="dataset id, e.g. hopper-medium-replay (see `offbench "
                                   "datasets list`), a Minari id, or a hybrid sim-to-real task "
                                   "DATASET@sim:gravity=0.5,... (--mode hybrid/o2o)")
    p.add_argument("--mode", default="offline",
                   help="offline (default); o2o: pre-train offline, then fine-tune online; "
                        "hybrid: online from scratch with the dataset in every minibatch; or "
                        "any mode registered with offbench.harness.cells.register_mode")
    p.add_argument("--seeds", type=_positive, default=1, help="seeds trained together (vmapped)")
    p.add_argument("--first-seed", type=_count, default=0)
    p.add_argument("--updates", type=_positive, help="gradient updates per seed (1000000)")
    p.add_argument("--eval-every", type=_positive, help="updates between evaluations (5000)")
    p.add_argument("--eval-episodes", type=_positive, help="episodes per evaluation (10)")
    p.add_argument("--checkpoint-every", type=_positive, help="updates between checkpoints (50000)")
    p.add_argument("--episode-length", type=_positive,
                   help="time limit of evaluation (and o2o/hybrid training) episodes (1000)")
    p.add_argument("--sampler", choices=["uniform", "return", "advantage"],
                   help="offline minibatches: uniform over transitions (default), or "
                        "trajectory-weighted by return or advantage (Hong et al. 2023; "
                        "docs/offline.md)")
    p.add_argument("--sampler-temperature", type=float, metavar="ALPHA",
                   help="temperature of the return/advantage sampler (default 0.1)")
    p.add_argument("--root", help="data root (default $OFFBENCH_DATASETS or ~/.offbench/datasets)")
    g = p.add_argument_group("o2o and hybrid modes (--eval-every and --checkpoint-every count "
                             "updates offline and env steps online)")
    g.add_argument("--offline-updates", type=_count,
                   help="o2o: pre-training updates per seed (1000000); hybrid: 0")
    g.add_argument("--online-steps", type=_positive, help="env steps per seed (1000000)")
    g.add_argument("--offline-ratio", type=float,
                   help="fraction of each online minibatch from the dataset, in [0, 1] "
                        "(default: the algorithm's, else 0.5; 0 drops the data)")
    g.add_argument("--utd", type=_positive, help="updates per env step (default: the "
                                                "algorithm's, else 1)")
    g.add_argument("--num-envs", type=_positive, help="training envs per seed (1)")
    g.add_argument("--warmup-steps", type=_count,
                   help="online steps with no updates first (default: the algorithm's, else 0)")
    g.add_argument("--threshold", type=float,
                   help="run.json reports the env steps to reach this normalized score")
    _add_run_options(p, "runs/MODE/ALGO-DATASET")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run every cell of a sweep spec into a results store")
    p.add_argument("spec", help="sweep spec (TOML; see tasks/sweeps/)")
    p.add_argument("--out", help="also write the leaderboard of the spec's profile here")
    p.add_argument("--datasets", nargs="+",
                   help="run only these of the spec's datasets (same cells as the whole spec)")
    p.add_argument("--report", action="store_true",
                   help="then write the reports the spec declares in [[report]] tables "
                        "(`make sweep SPEC=...`; docs/harness.md)")
    _add_sweep_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("bench", help="the benchmark: a profile's sweep, then its leaderboard")
    p.add_argument("--profile", default="auto",
                   help="cpu, gpu, full or auto (cpu without an accelerator, else gpu)")
    p.add_argument("--algos", nargs="*", default=[],
                   help="algorithms (names or module paths) run beside the profile's ones")
    p.add_argument("--out", help="leaderboard folder (default results, or "
                                 "results/submissions/NAME with --algos: the committed "
                                 "leaderboard is never overwritten by a submission)")
    p.add_argument("--started-at", type=float, metavar="EPOCH_S",
                   help="when the run began (Unix time; `make bench` passes its own start, so "
                        "the leaderboard's time includes the install check)")
    _add_sweep_options(p)
    p.set_defaults(func=cmd_bench, seed_group="auto")

    p = sub.add_parser("report", help="leaderboard, statistics and plots of a results store")
    p.add_argument("store", help="results store folder")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--profile", help="only this profile (default: each profile on its own)")
    p.add_argument("--reps", type=int, default=5_000, help="bootstrap resamples")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("store", help="check a results store: every cell's files, with the "
                                     "command that repairs or reruns each bad one")
    p.add_argument("action", choices=["check"])
    p.add_argument("store", nargs="?", default=DEFAULT_STORE,
                   help=f"results store (default {DEFAULT_STORE})")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("doctor", help="what this machine runs the benchmark on: devices, "
                                      "backend, env and update speeds, a profile's memory")
    p.add_argument("--profile", default="auto",
                   help="whose largest cell's memory to estimate (auto: cpu without an "
                        "accelerator, gpu with one)")
    p.add_argument("--backend", choices=["mujoco", "mjx"],
                   help="force the tasks' physics backend (default: the device's)")
    p.add_argument("--task", default="hopper", help="task of the env and update timings")
    p.add_argument("--algorithm", default="td3_bc", help="algorithm of the update timing")
    p.add_argument("--batch", type=int, default=64, help="envs vmapped in the env timing")
    p.add_argument("--updates", type=int, default=1000, help="updates in the update timing")
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("check", help="validate an algorithm module against the contract")
    p.add_argument("module", help="a .py file, a dotted module path or a name in baselines/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config overrides for the check (e.g. hidden=32,32 to make it quick)")
    p.add_argument("--updates", type=int, default=3, help="updates per training check")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("report-offline", help="offline learning-check report from run folders")
    p.add_argument("runs", nargs="*", help="run folders (from `offbench run --out`)")
    p.add_argument("--sweep", action="append",
                   help="instead: every cell this sweep (its spec's name) ran; repeat for several")
    p.add_argument("--datasets", nargs="+", help="with --sweep: only these datasets' cells")
    p.add_argument("--title", default="Offline learning check", help="the report's heading")
    p.add_argument("--store", default=DEFAULT_STORE, help="results store of --sweep")
    p.add_argument("--out", default="results/offline/check.md")
    p.add_argument("--budget", default="as in each run's settings",
                   help="a sentence stating the compute budget, printed in the report")
    p.set_defaults(func=cmd_report_offline)

    p = sub.add_parser("report-robustness", help="scores on clean and corrupted datasets: "
                       "drops, areas under the score-vs-rate curve, CIs (reports/robustness.py)")
    p.add_argument("runs", nargs="*", help="offline run folders or store cells")
    p.add_argument("--sweep", action="append",
                   help="instead: every cell this sweep ran; repeat for several")
    p.add_argument("--datasets", nargs="+", help="with --sweep: only these datasets' cells")
    p.add_argument("--title", default="Robustness under data corruption",
                   help="the report's heading")
    p.add_argument("--store", default=DEFAULT_STORE, help="results store of --sweep")
    p.add_argument("--out", default="results/checks/robustness/report.md")
    p.add_argument("--budget", default="as in each run's settings",
                   help="a sentence stating the compute budget, printed in the report")
    p.add_argument("--reps", type=int, default=5_000, help="bootstrap resamples")
    p.set_defaults(func=cmd_report_robustness)

    p = sub.add_parser("probe", help="what trained offline agents' critics think of the "
                       "data, their policy and random actions (offbench/reports/probe.py)")
    p.add_argument("runs", nargs="*", help="offline run folders or store cells")
    p.add_argument("--sweep", action="append",
                   help="instead: every cell this sweep ran; repeat for several")
    p.add_argument("--datasets", nargs="+", help="with --sweep: only these datasets' cells")
    p.add_argument("--store", default=DEFAULT_STORE, help="results store of --sweep")
    p.add_argument("--samples", type=int, default=2048, help="dataset states probed")
    p.add_argument("--out", help="write a Markdown report here (and a CSV beside it)")
    p.add_argument("--title", default="Critic probe", help="the report's heading")
    p.set_defaults(func=cmd_probe)

    for name, what in (("o2o", "O2O"), ("hybrid", "hybrid")):
        p = sub.add_parser(f"report-{name}",
                           help=f"{what} learning-check report from the cells of sweeps")
        p.add_argument("--sweep", action="append", required=True,
                       help="a sweep (its spec's name) whose cells to report (repeatable)")
        p.add_argument("--store", default=DEFAULT_STORE, help="results store of the sweeps")
        p.add_argument("--out", default=f"results/{name}/check.md")
        p.add_argument("--budget", default="as in each cell's resolved budget (below)",
                       help="a sentence stating the compute budget, printed in the report")
        p.add_argument("--title", help=f"the report's heading (default: {what} learning check)")
        if name == "hybrid":
            p.add_argument("--threshold", action="append", metavar="DATASET=SCORE",
                           help="normalized score to reach (default: the task's medium "
                                "policy's level)")
        p.set_defaults(func=cmd_report_mixed)

    p = sub.add_parser("report-online", help="learning curves + table of online runs")
    p.add_argument("runs", nargs="+", help="run folders (from train-online --out)")
    p.add_argument("--out", default="results/online/sac.md")
    p.add_argument("--title", default="SAC learning check")
    p.set_defaults(func=cmd_report_online)

    p = sub.add_parser("policies", help="behaviour policies for the datasets (tasks/policies)")
    p.add_argument("action", choices=["select", "list"],
                   help="select: choose expert/medium/replay snapshots from training runs and "
                        "measure the reference scores (ant-waypoint: the AntMaze navigation "
                        "controller, tasks/policies/ant-nav); list: show the committed ones")
    p.add_argument("tasks", nargs="*", help="tasks (select)")
    p.add_argument("--runs", default=str(Path.home() / ".cache" / "offbench" / "runs"
                                         / "policies"),
                   help="folder holding one `train-online --snapshots` run per task")
    p.add_argument("--seed", type=int, default=0, help="which seed of the runs to use")
    p.set_defaults(func=cmd_policies)

    p = sub.add_parser("datasets", help="build, list, inspect and report datasets")
    p.add_argument("action", choices=["list", "build", "info", "report"])
    p.add_argument("ids", nargs="*", help="dataset ids TASK-KIND[-SIZE], e.g. hopper-medium; "
                   "info and report also take ids with transforms (ID+mix=expert:0.05, "
                   "docs/datasets.md): report then tables exactly the ids given")
    p.add_argument("--all", action="store_true",
                   help="every kind of every task with policies, and the PointMaze datasets")
    p.add_argument("--size", help="transitions per dataset (default 1m; e.g. 100k)")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.add_argument("--root", help="data root (default $OFFBENCH_DATASETS or ~/.offbench/datasets)")
    p.add_argument("--force", action="store_true", help="rebuild datasets that exist")
    p.add_argument("--out", default="results/datasets.md", help="report: output file")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("perf", help="throughput benchmarks (written to results/perf)")
    p.add_argument("suite", choices=["envs", "online", "offline", "o2o"], help="what to measure")
    p.add_argument("--tasks", nargs="*", help="tasks (default: all)")
    p.add_argument("--backends", nargs="*", default=["mujoco", "mjx"], choices=["mujoco", "mjx"])
    p.add_argument("--mjx-tasks", nargs="*", metavar="TASK",
                   help="envs suite: measure only these of --tasks on MJX too (default: all)")
    p.add_argument("--batches", nargs="*", type=int, default=[1, 16, 256])
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median is reported)")
    p.add_argument("--env-steps", type=int, default=2000, help="online/o2o suites: steps per run")
    p.add_argument("--updates", type=int, default=1000, help="offline suite: updates per run")
    p.add_argument("--algorithms", nargs="*", help="offline suite: algorithms (default: all)")
    p.add_argument("--out", default="results/perf", help="output folder")
    p.set_defaults(func=cmd_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    # XLA logs a screenful of benign "Target machine feature +prefer-no-gather" errors each time
    # it loads an executable from the persistent compilation cache (openxla/xla#44565), which
    # drowns progress output. Quiet XLA's C++ log unless the user chose a level; set
    # TF_CPP_MIN_LOG_LEVEL=0 to see everything. Python errors are unaffected.
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # long commands' output usually goes to a log file: a line there as soon as it is printed
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "offbench " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    offbench.enable_compilation_cache()
    # run.json and reports record this command, not the process's argv: started as
    # `python -c ...` or `python -m offbench`, argv[0] would not say how to rerun it
    outer = provenance.COMMAND
    if outer is None:
        provenance.COMMAND = args.command_line
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input: one line
        print(f"offbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, IsADirectoryError) as err:  # a path's mistake
        print(f"offbench {args.command}: error: cannot write {err.filename or 'a file'}: "
              f"{err.strerror}; choose a folder you can write to", file=sys.stderr)
        return 2
    finally:
        provenance.COMMAND = outer


if __name__ == "__main__":
    sys.exit(main())
