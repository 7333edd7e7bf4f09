"""The leaderboard of a results store (`offbench report STORE --out results/`).

Written per profile (profiles are never mixed in one table; with several profiles in the store
and none chosen, each gets its own folder OUT/<profile>/), one section per mode, each with its
budget line:

- offline: per task (dataset), mean ± std over seeds of the normalized `last` score (the final
  policy's many-episode evaluation, with its standard error) and `best` score (best periodic
  evaluation), seeds and diverged seeds; aggregates over runs x tasks (IQM, median, mean with
  95% stratified-bootstrap CIs) and the probability of improvement between algorithms (rliable).
- o2o (offline pre-training, then online fine-tuning): per task the pre-train score (last
  offline evaluation), the dip (lowest evaluation in the first 10% of the online budget), the
  final score (the final policy's evaluation), gain = final - pre-train and regret (mean of
  1 - score/100 over the online evaluations); aggregates of final and gain with CIs.
- hybrid (online RL with the dataset in its minibatches): per task, with data (offline_ratio >
  0) or without, the env steps to the budget's threshold (median over seeds, how many reached
  it), the final score and the AUC (mean normalized score over the online evaluations, i.e. the
  area under the learning curve over the budget); aggregates of final and AUC with CIs.
- `leaderboard.csv`: one long table of every section (`section` column; a section's columns
  are empty in the others); `scores.csv`: tidy, one row per seed per task per algorithm;
  `aggregate.csv`, `improvement.csv` (with `mode` and `score` columns).
- PNG: learning curves per task with seed bands, aggregate interval estimates, performance
  profiles.

Only cells whose status is `complete` are read (see offbench/harness/store.py).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from offbench.harness.store import Store  # noqa: E402
from offbench.io import write_text_atomic  # noqa: E402
from offbench.provenance import record  # noqa: E402
from offbench.reports import plots  # noqa: E402

# The per-seed numbers each section aggregates over runs x tasks (IQM, median, mean with CIs);
# the first is also compared pairwise (probability of improvement) and plotted.
SECTION_SCORES = {"offline": ("last_score", "best_score"), "o2o": ("last_score", "gain"),
                  "hybrid": ("last_score", "auc")}
SCORE_NAMES = {"last_score": "last score (the final policy)", "best_score": "best score",
               "gain": "gain (final - pre-train)", "auc": "AUC (mean online evaluation)"}
SECTION_TITLES = {"offline": "offline", "o2o": "o2o: offline pre-training, online fine-tuning",
                  "hybrid": "hybrid: online RL with the offline data in its minibatches"}
STEP_COLUMNS = ("updates", "env_steps")
AGGREGATES = ("IQM", "Median", "Mean")


# the o2o/hybrid budget keys budget_text words (mode, checkpoint spacing and backend change
# nothing it compares: the mode is the section, the backend is in the cell's identity)
MIXED_SHOWN = {"mode", "offline_updates", "online_steps", "offline_ratio", "eval_every",
               "eval_episodes", "checkpoint_every", "num_envs", "utd", "warmup_steps",
               "warmup_actions", "buffer_size", "backend", "episode_length", "threshold",
               "final_eval_episodes"}


def budget_text(mode: str, budget: dict) -> str:
    """The budget in words (what changes the numbers; checkpoint spacing does not), with the
    minibatch sampler when it is not uniform (so weighted and uniform cells are never pooled)."""
    if mode == "offline" and "updates" in budget:
        length = budget.get("episode_length") or 1000
        final = budget.get("final_eval_episodes")
        sampler = budget.get("sampler", "uniform")
        return (f"{budget['updates']} updates, eval every {budget['eval_every']} "
                f"({budget['eval_episodes']} episodes of {length} steps)"
                + (f", final eval {final} episodes" if final else "")
                + (f", {sampler}-weighted sampling (temperature "
                   f"{budget['sampler_temperature']:g})" if sampler != "uniform" else ""))
    if mode in ("o2o", "hybrid") and "online_steps" in budget:
        ratio, utd = budget.get("offline_ratio"), budget.get("utd")
        parts = [(f"{budget['offline_updates']} offline updates then "
                  if budget.get("offline_updates") else "")
                 + f"{budget['online_steps']} online env steps"
                 + (f" (UTD {utd})" if utd else "")
                 + (f" after {budget['warmup_steps']} {budget.get('warmup_actions', 'random')}"
                    "-action steps" if budget.get("warmup_steps") else ""),
                 f"offline_ratio {ratio:g}" if ratio is not None else "",
                 f"eval every {budget['eval_every']} ({budget['eval_episodes']} episodes)",
                 f"final eval {budget['final_eval_episodes']} episodes"
                 if budget.get("final_eval_episodes") else "",
                 f"threshold {budget['threshold']:g}" if budget.get("threshold") is not None
                 else "",
                 f"{budget['num_envs']} envs" if budget.get("num_envs", 1) != 1 else "",
                 f"buffer {budget['buffer_size']}" if budget.get("buffer_size") else "",
                 f"episodes of {budget['episode_length']} steps"
                 if budget.get("episode_length") else ""]
        # any other key (a loop's new budget field) as it is, so that budgets never read alike
        parts += [f"{k}={v}" for k, v in sorted(budget.items()) if k not in MIXED_SHOWN]
        return ", ".join(p for p in parts if p)
    return ", ".join(f"{k}={v}" for k, v in sorted(budget.items())
                     if k not in ("checkpoint_every", "backend"))


def load_store(store: Store, cells: Collection[str] | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """(tidy per-seed table, learning-curve rows, (profile, name) of cells not complete).
    cells: only these cell folders (the cells of one sweep run, e.g. `make bench`, or a
    learning check's: `store.sweep_cells`)."""
    finals, curves, incomplete = [], [], []
    for cell in store.cells():
        if cells is not None and cell.name not in cells:
            continue
        if not cell.complete:
            profile = cell.config().get("profile")
            incomplete.append((profile, f"{cell.name} ({cell.status().get('state')})"))
            continue
        config = cell.config()
        info = json.loads((cell.path / "run.json").read_text())
        if "per_seed" not in info:  # a mode whose runner records no per-seed results
            incomplete.append((config.get("profile"), f"{cell.name} (no per_seed in run.json)"))
            continue
        label = config["algorithm"] + (f"[{config['variant']}]" if config.get("variant") else "")
        base = {"profile": config["profile"], "mode": config["mode"], "algorithm": label,
                "dataset": config["dataset"], "task": info.get("task"),
                "budget": budget_text(config["mode"], config["budget"]),
                "offline_ratio": config["budget"].get("offline_ratio"),
                "overrides": " ".join(config.get("overrides", [])), "cell": cell.name,
                "git_commit": info.get("git_commit"), "wall_s": info.get("wall_s"),
                "dataset_sha256": config.get("dataset_sha256")}
        for seed, result in info["per_seed"].items():
            finals.append({**base, "seed": int(seed), **result})
        metrics = pd.read_csv(cell.path / "metrics.csv")
        for key in ("profile", "mode", "algorithm", "dataset", "budget", "cell"):
            metrics[key] = base[key]
        curves.append(metrics)
    finals_df = pd.DataFrame(finals)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if len(finals_df):
        # a dataset rebuilt from re-selected policies keeps its id; never pool its versions
        versions = finals_df.groupby(["profile", "dataset"]).dataset_sha256.nunique(
            dropna=False)
        mixed = versions[versions > 1]
        if len(mixed):
            profile, dataset = mixed.index[0]
            raise ValueError(
                f"{store.root} holds cells of {mixed.iloc[0]} versions of dataset {dataset} "
                f"(profile {profile}; it was rebuilt from other behaviour policies): report "
                "one sweep's cells (`offbench sweep SPEC --out DIR` or `make bench`) or move "
                "the cells of the old version out of the store")
    return finals_df, curves_df, incomplete


def per_seed_extras(finals: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """finals with `gain` (o2o: last_score - pretrain_score, the final policy's score minus the
    last pre-training evaluation) and `auc` (o2o, hybrid: the mean normalized score over the
    run's online evaluations, from its learning curve)."""
    finals = finals.copy()
    if "pretrain_score" in finals:
        finals["gain"] = np.where(finals["mode"] == "o2o",
                                  finals.last_score - finals.pretrain_score, np.nan)
    if len(curves) and "phase" in curves and "cell" in curves:
        online = curves[curves.phase == "online"]
        auc = online.groupby(["cell", "seed"]).normalized_score.mean().rename("auc")
        finals = finals.merge(auc.reset_index(), on=["cell", "seed"], how="left")
    return finals


def entries(finals: pd.DataFrame) -> pd.DataFrame:
    """Rows labelled by `entry`: the algorithm (with its grid variant), plus its budget when that
    label has several budgets in one profile and mode (so numbers of different budgets are never
    pooled; a grid over a budget key, e.g. RLPD's offline_ratio, is told apart by its label)."""
    several = finals.groupby(["profile", "mode", "algorithm"]).budget.transform("nunique") > 1
    return finals.assign(entry=np.where(several, finals.algorithm + " @ " + finals.budget,
                                        finals.algorithm))


# o2o/hybrid per-seed numbers the long table carries (mean and std over seeds)
SECTION_COLUMNS = ("pretrain_score", "dip", "gain", "regret", "auc")


def task_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Per profile, mode (section), dataset and entry: mean and std (ddof=0) over seeds, seed
    counts, and the o2o/hybrid numbers where the runs have them (one long table)."""
    if "last_score_se" not in finals:  # runs without a final evaluation (older cells)
        finals = finals.assign(last_score_se=np.nan, final_eval_episodes=np.nan)
    grouped = finals.groupby(["profile", "mode", "dataset", "entry"], sort=True)
    columns = {
        "last_mean": grouped.last_score.mean(), "last_std": grouped.last_score.std(ddof=0),
        # the final evaluation's standard error over its episodes, mean over seeds
        "last_eval_se": grouped.last_score_se.mean(),
        "final_eval_episodes": grouped.final_eval_episodes.max(),
        "best_mean": grouped.best_score.mean(), "best_std": grouped.best_score.std(ddof=0),
        "seeds": grouped.seed.count(), "diverged": grouped.diverged.sum().astype(int)}
    for name in SECTION_COLUMNS:
        if name in finals:
            columns[f"{name}_mean"] = grouped[name].mean()
            columns[f"{name}_std"] = grouped[name].std(ddof=0)
    if "steps_to_threshold" in finals:  # None (never reached) is NaN
        steps = pd.to_numeric(finals.steps_to_threshold, errors="coerce")
        by = [finals[k] for k in ("profile", "mode", "dataset", "entry")]
        columns["steps_to_threshold_median"] = steps.groupby(by).median()
        columns["reached_threshold"] = steps.notna().groupby(by).sum().astype(int)
    if "offline_ratio" in finals:
        columns["offline_ratio"] = grouped.offline_ratio.first()
    columns.update(budget=grouped.budget.first(), overrides=grouped.overrides.first())
    table = pd.DataFrame(columns).reset_index()
    table.insert(1, "section", table["mode"])
    return table


def score_matrices(rows: pd.DataFrame, score: str) -> tuple[dict[str, np.ndarray], list[str],
                                                             list[str]]:
    """entry -> (runs x tasks) matrix for entries that cover every task of `rows`; runs per
    task are the seeds, cut to the smallest count over tasks. Also the tasks and the entries
    left out (missing tasks)."""
    tasks = sorted(rows.dataset.unique())
    matrices, left_out = {}, []
    for entry, er in rows.groupby("entry", sort=True):
        if set(er.dataset) != set(tasks):
            left_out.append(entry)
            continue
        columns = [er[er.dataset == t].sort_values("seed")[score].to_numpy() for t in tasks]
        n = min(len(c) for c in columns)
        matrices[entry] = np.stack([c[:n] for c in columns], axis=1)
    return matrices, tasks, left_out


def _aggregate_func(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_median(scores),
                     metrics.aggregate_mean(scores)])


@contextlib.contextmanager
def _seeded(seed: int):
    """Reproducible bootstrap CIs. rliable 1.2's stratified resampling draws its indices from
    numpy's global generator (np.random.choice), not from the random_state it is given, so the
    global generator is seeded here and restored afterwards. arch's warning that RandomState
    seeding is deprecated is silenced: that seed is what we want."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(saved)


def aggregate(matrices: dict[str, np.ndarray], reps: int, seed: int = 0) -> pd.DataFrame:
    """IQM, median, mean and their 95% stratified-bootstrap CIs (rliable)."""
    from rliable import library as rly

    with _seeded(seed):
        points, intervals = rly.get_interval_estimates(
            matrices, _aggregate_func, reps=reps, random_state=np.random.RandomState(seed))
    rows = []
    for entry in matrices:
        for i, name in enumerate(AGGREGATES):
            rows.append({"entry": entry, "metric": name, "value": float(points[entry][i]),
                         "ci_low": float(intervals[entry][0, i]),
                         "ci_high": float(intervals[entry][1, i]),
                         "runs": int(matrices[entry].shape[0]),
                         "tasks": int(matrices[entry].shape[1])})
    return pd.DataFrame(rows)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks, for (runs x tasks) arrays: on each task the Mann-Whitney U
    statistic of X over Y (pairs where x > y, ties counting one half) over the number of pairs.
    The same statistic as rliable's metrics.probability_of_improvement (tested against it), but
    counted with numpy: rliable's goes through scipy.stats.mannwhitneyu, which also computes an
    exact p-value nobody uses, and took minutes for a few thousand bootstrap resamples here."""
    pairs_greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    pairs_equal = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(pairs_greater + 0.5 * pairs_equal))


def improvement(matrices: dict[str, np.ndarray], reps: int, seed: int = 0) -> pd.DataFrame:
    """P(X > Y) for every pair, averaged over tasks, with 95% stratified-bootstrap CIs
    (rliable's bootstrap). P(Y > X) = 1 - P(X > Y) exactly (ties count one half), so each
    unordered pair is bootstrapped once and mirrored."""
    from rliable import library as rly

    names = list(matrices)
    pairs = {f"{x}|{y}": (matrices[x], matrices[y])
             for i, x in enumerate(names) for y in names[i + 1:]}
    if not pairs:
        return pd.DataFrame(columns=["x", "y", "p_x_better", "ci_low", "ci_high"])
    with _seeded(seed):
        points, intervals = rly.get_interval_estimates(
            pairs, probability_of_improvement, reps=reps,
            random_state=np.random.RandomState(seed))
    rows = []
    for key in pairs:
        low, high = np.ravel(intervals[key])
        p = float(np.ravel(points[key])[0])
        x, y = key.split("|")
        rows.append({"x": x, "y": y, "p_x_better": p, "ci_low": float(low),
                     "ci_high": float(high)})
        rows.append({"x": y, "y": x, "p_x_better": 1.0 - p, "ci_low": 1.0 - float(high),
                     "ci_high": 1.0 - float(low)})
    return pd.DataFrame(rows)


def plot_curves(curves: pd.DataFrame, out: Path, prefix: str) -> list[str]:
    """One PNG per (mode, dataset), against updates or env steps, whichever the mode counts."""
    return plots.plot_curves(
        curves, out, ["mode", "dataset"],
        x=lambda rows: next((c for c in STEP_COLUMNS if c in rows and rows[c].notna().any()),
                            "period"),
        file_name=lambda key: f"{prefix}curve_{key[0]}_{key[1].replace('/', '_')}.png",
        labels=lambda key, rows, x: {"title": f"{key[1]} ({key[0]}; mean ± std over seeds)",
                                     "xlabel": x, "ylabel": "normalized score"})


def plot_aggregates(agg: pd.DataFrame, matrices: dict[str, np.ndarray], out: Path,
                    name: str, what: str) -> list[str]:
    """The aggregate intervals and the performance profile of one mode's scores, each titled
    with `what` (the profile, the mode and which score), since a PNG is also seen alone."""
    from rliable import library as rly
    from rliable import plot_utils

    points = {e: agg[agg.entry == e].set_index("metric").loc[list(AGGREGATES), "value"].to_numpy()
              for e in matrices}
    intervals = {e: agg[agg.entry == e].set_index("metric").loc[
        list(AGGREGATES), ["ci_low", "ci_high"]].to_numpy().T for e in matrices}
    colors = {e: plots.algorithm_color(e) for e in matrices}  # the same in every plot
    fig, _ = plot_utils.plot_interval_estimates(
        points, intervals, list(AGGREGATES), algorithms=list(matrices), colors=colors,
        row_height=0.5, xlabel_y_coordinate=-0.8 / max(1, len(matrices)) - 0.1,
        xlabel="normalized score")
    fig.suptitle(f"{what}; 95% bootstrap CIs over runs x tasks", fontsize=12, y=1.12)
    plots.save(fig, out / f"{name}_intervals.png")
    top = max(float(m.max()) for m in matrices.values())
    taus = np.linspace(min(0.0, min(float(m.min()) for m in matrices.values())),
                       max(100.0, top), 101)
    with _seeded(0):
        profiles, cis = rly.create_performance_profile(matrices, taus, reps=200)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                         colors=colors, xlabel=r"normalized score ($\tau$)")
    ax.set_title(what, fontsize=10)
    ax.legend(fontsize=9)
    plots.save(fig, out / f"{name}_profiles.png")
    return [f"{name}_intervals.png", f"{name}_profiles.png"]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def _pm_column(means: pd.Series, stds: pd.Series) -> list[str]:
    return [_pm(m, s) if np.isfinite(m) else "" for m, s in zip(means, stds, strict=True)]


def _steps_column(table: pd.DataFrame) -> list[str]:
    """'median (k/n)' env steps to the threshold over the seeds that reached it."""
    return [(f"{m:.0f}" if np.isfinite(m) else "not reached") + f" ({k}/{n})"
            for m, k, n in zip(table.steps_to_threshold_median, table.reached_threshold,
                               table.seeds, strict=True)]


def section_table(mtable: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The per-task table of one section, as shown in leaderboard.md."""
    shown = {"task": mtable.dataset, "algorithm": mtable.entry}
    if mode == "hybrid" and "offline_ratio" in mtable:
        shown["data"] = ["with" if r and r > 0 else "without" for r in mtable.offline_ratio]
    if mode == "o2o":
        for name, col in (("pre-train", "pretrain_score"), ("dip", "dip")):
            if f"{col}_mean" in mtable:
                shown[name] = _pm_column(mtable[f"{col}_mean"], mtable[f"{col}_std"])
    if mode == "hybrid" and "steps_to_threshold_median" in mtable:
        shown["steps to threshold"] = _steps_column(mtable)
    shown["final" if mode != "offline" else "last"] = _pm_column(mtable.last_mean,
                                                                  mtable.last_std)
    if np.isfinite(mtable.last_eval_se).any():
        shown["eval SE"] = [f"{se:.1f}" if np.isfinite(se) else "" for se in mtable.last_eval_se]
    extra = {"o2o": (("gain", "gain"), ("regret", "regret")), "hybrid": (("AUC", "auc"),)}
    for name, col in extra.get(mode, ()):
        if f"{col}_mean" in mtable and np.isfinite(mtable[f"{col}_mean"]).any():
            shown[name] = _pm_column(mtable[f"{col}_mean"], mtable[f"{col}_std"])
    shown["best"] = _pm_column(mtable.best_mean, mtable.best_std)
    shown.update(seeds=mtable.seeds, diverged=mtable.diverged)
    return pd.DataFrame(shown)


def _aggregate_text(agg: pd.DataFrame) -> str:
    shown = agg.assign(value=[f"{v:.1f} [{lo:.1f}, {hi:.1f}]" for v, lo, hi in
                              zip(agg.value, agg.ci_low, agg.ci_high, strict=True)])
    return shown.pivot(index="entry", columns="metric", values="value")[
        list(AGGREGATES)].reset_index().to_markdown(index=False)


def _improvement_text(poi: pd.DataFrame) -> str:
    return poi.assign(p=[f"{p:.2f} [{lo:.2f}, {hi:.2f}]" for p, lo, hi in zip(
        poi.p_x_better, poi.ci_low, poi.ci_high, strict=True)]).pivot(
        index="x", columns="y", values="p").fillna("").reset_index().rename(
        columns={"x": ""}).to_markdown(index=False)


SECTION_NOTES = {
    "o2o": "pre-train = the last evaluation of offline pre-training; dip = the lowest "
           "evaluation in the first 10% of the online budget; final = the final policy's "
           "evaluation (eval SE beside it); gain = final - pre-train; regret = mean of "
           "1 - score/100 over the online evaluations (lower is better); best = the best "
           "online evaluation. Mean ± std over seeds.",
    "hybrid": "data: with (offline_ratio > 0 of every minibatch from the dataset) or without "
              "(the same agent and budget from its own replay alone); steps to threshold = "
              "env steps of the first evaluation at or above the budget's threshold, median "
              "over the seeds that reached it (how many of all did); final = the final "
              "policy's evaluation; AUC = mean normalized score over the online evaluations "
              "(the area under the learning curve over the budget, per env step). Mean ± std "
              "over seeds.",
}


def write_section(mode: str, mrows: pd.DataFrame, mtable: pd.DataFrame, curves: pd.DataFrame,
                  out: Path, reps: int, profile: str
                  ) -> tuple[list[str], list[pd.DataFrame], list[pd.DataFrame]]:
    """One mode's section of leaderboard.md: budget line, per-task table, aggregates of the
    section's scores with CIs, probability of improvement, plots, learning curves."""
    budgets = sorted(mrows.budget.unique())
    text = [f"## {SECTION_TITLES.get(mode, mode)}", "",
            f"Budget{'s' if len(budgets) > 1 else ''}: " + "; ".join(budgets) + ".", ""]
    if mode in SECTION_NOTES:
        text += [SECTION_NOTES[mode], ""]
    text += [section_table(mtable, mode).to_markdown(index=False), ""]
    aggregates, improvements = [], []
    for i, score in enumerate(SECTION_SCORES.get(mode, SECTION_SCORES["offline"])):
        if score not in mrows or not mrows[score].notna().all():
            continue
        matrices, tasks, left_out = score_matrices(mrows, score)
        if not matrices:
            continue
        agg = aggregate(matrices, reps).assign(mode=mode, score=score)
        aggregates.append(agg)
        text += [f"### Aggregate over {len(tasks)} task(s), {SCORE_NAMES[score]}", "",
                 _aggregate_text(agg), ""]
        if left_out:
            text += [f"Not in the aggregate (missing tasks): {', '.join(left_out)}.", ""]
        if i > 0 and mode != "offline":  # pairwise comparisons on the final score only
            continue
        poi = improvement(matrices, reps).assign(mode=mode, score=score)
        improvements.append(poi)
        if len(poi):
            text += ["P(row > column), 95% CI:", "", _improvement_text(poi), ""]
        if score == "last_score":
            names = plot_aggregates(agg, matrices, out, f"aggregate_{mode}",
                                    f"profile {profile}, {mode}: {SCORE_NAMES[score]}")
            text += [f"![{p}]({p})" for p in names] + [""]
    curve_rows = curves[curves["mode"] == mode] if len(curves) else curves
    if len(curve_rows):
        text += ["### Learning curves", "",
                 *[f"![{p}]({p})" for p in plot_curves(curve_rows, out, "")], ""]
    return text, aggregates, improvements


def write_profile(finals: pd.DataFrame, curves: pd.DataFrame, out: Path, reps: int,
                  incomplete: list[str], notes: str | None = None) -> dict[str, pd.DataFrame]:
    """One profile's leaderboard into `out` (caller guarantees a single profile). notes: a
    paragraph under the header (the profile's own account of what it leaves out, its time)."""
    profiles = finals.profile.unique()
    assert len(profiles) == 1, f"profiles mixed in one leaderboard: {profiles}"
    profile = profiles[0]
    out.mkdir(parents=True, exist_ok=True)
    finals = entries(per_seed_extras(finals, curves))
    table = task_table(finals)
    write_text_atomic(out / "leaderboard.csv", table.to_csv(index=False))
    write_text_atomic(out / "scores.csv", finals.to_csv(index=False))
    prov = record()
    modes = sorted(finals["mode"].unique(), key=lambda m: (list(SECTION_SCORES).index(m)
                                                           if m in SECTION_SCORES else 9, m))
    text = [f"# Leaderboard: profile `{profile}`", "",
            f"Profile **{profile}**; sections: {', '.join(modes)} (each with its budget "
            "line). Numbers of different profiles are never in one table.",
            "", f"Report by `{prov['command']}` at commit `{prov['git_commit']}` on "
            f"{prov['date']}; training commits: "
            + ", ".join(f"`{c}`" for c in sorted(finals.git_commit.dropna().unique())) + ". "
            f"Training wall time: {finals.groupby('cell').wall_s.first().sum() / 60:.1f} min "
            f"over {finals.cell.nunique()} cells (each cell's run.json has its own, with its "
            "command, versions and machine).", ""]
    if notes:
        text += [notes.strip(), ""]
    text += ["Normalized score = 100 * (return - ref_min) / (ref_max - ref_min) (random = 0, "
             "expert = 100; navigation tasks: 100 x success rate). last (offline) and final "
             "(o2o, hybrid) = the final policy's evaluation on many episodes after training "
             "(the budget's final_eval_episodes; eval SE = its standard error over those "
             "episodes, mean over seeds), or the last periodic evaluation for runs without "
             "one; best = best periodic evaluation during training (an optimistic number: it "
             "selects on the test itself); mean ± std over seeds (population std). Aggregates "
             "over runs x tasks: IQM (mean of the middle 50% of all runs), median (over tasks, "
             "of each task's mean) and mean, with 95% stratified-bootstrap confidence "
             f"intervals (rliable, {reps} resamples); P(X > Y) is the probability that a run "
             "of X beats a run of Y on a task, averaged over tasks.", ""]
    overrides = finals.groupby("entry").overrides.first()
    if (overrides != "").any():
        text += ["Overrides of the published hyperparameters (per algorithm):", "",
                 *[f"- {e}: `{o}`" for e, o in overrides.items() if o], ""]
    aggregates, improvements = [], []
    for mode in modes:
        lines, aggs, pois = write_section(
            mode, finals[finals["mode"] == mode], table[table["mode"] == mode], curves, out,
            reps, profile)
        text += lines
        aggregates += aggs
        improvements += pois
    if incomplete:
        text += ["## Cells not included (not complete)", "", *[f"- {c}" for c in incomplete],
                 ""]
    result = {"table": table, "scores": finals}
    if aggregates:
        result["aggregate"] = pd.concat(aggregates, ignore_index=True)
        write_text_atomic(out / "aggregate.csv", result["aggregate"].to_csv(index=False))
    if improvements:
        result["improvement"] = pd.concat(improvements, ignore_index=True)
        write_text_atomic(out / "improvement.csv", result["improvement"].to_csv(index=False))
    write_text_atomic(out / "leaderboard.md", "\n".join(text))
    return result


def write_report(store_root: Path | str, out: Path | str, profile: str | None = None,
                 reps: int = 5_000, log: Callable[[str], None] = print,
                 cells: Collection[str] | None = None, notes: str | None = None
                 ) -> dict[str, dict[str, pd.DataFrame]]:
    """Leaderboards of a store: OUT/ for one profile, OUT/<profile>/ for each of several.
    cells: only these cell folders (a sweep's current cells; default every cell); notes: a
    paragraph under each leaderboard's header."""
    finals, curves, incomplete = load_store(Store(store_root), cells=cells)
    if finals.empty:
        raise ValueError(f"{store_root} holds no complete cell to report"
                         + (f" ({len(incomplete)} incomplete)" if incomplete else ""))
    out = Path(out)
    available = sorted(finals.profile.unique())
    if profile is not None:
        if profile not in available:
            raise ValueError(f"no complete cell of profile '{profile}' in {store_root}; "
                             f"profiles there: {available}")
        chosen = [profile]
    else:
        chosen = available
    results = {}
    for p in chosen:
        folder = out if len(chosen) == 1 else out / p
        rows = finals[finals.profile == p]
        crows = curves[curves.profile == p] if len(curves) else curves
        results[p] = write_profile(rows, crows, folder, reps,
                                   [name for q, name in incomplete if q == p], notes=notes)
        log(f"wrote {folder / 'leaderboard.md'} (profile {p})")
    return results
