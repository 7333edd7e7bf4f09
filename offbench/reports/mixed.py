"""The O2O and hybrid learning checks (results/o2o/check.md, results/hybrid/check.md) from the
cells of named sweeps in a results store: per-seed numbers, a verdict per claim, learning curves.

Claims (the O2O/hybrid issue) and how each verdict is decided, fixed before any run:

- O2O (`o2o_verdicts`): fine-tuning improves on the offline score. Per algorithm and dataset,
  gain = final_score (last online evaluation) - pretrain_score (last offline evaluation), per
  seed; "held" when the mean gain over seeds is more than twice its standard error (over
  seeds) above 0, "NOT held" when that far below, else "within noise" (the offline check's
  rule, offbench/reports/offline.py `verdict`; one seed is always within noise).
- Data speeds up online RL (`data_verdicts`, plain datasets): an algorithm with the dataset in
  its minibatches (offline_ratio > 0) against the same algorithm and budget without it
  (offline_ratio = 0, i.e. from scratch). Steps to threshold per seed = env steps of the first
  online evaluation scoring >= the threshold (offbench.metrics.steps_to_threshold). A seed that
  never reaches it counts as reaching it one evaluation after the budget ends (`censored`: a
  lower bound on its steps, so the rule can only understate a difference). "held" when the
  mean censored steps without the data exceed those with it by more than twice the standard
  error of the difference, "NOT held" when that far the other way, else "within noise";
  "undecided" when no seed of either reaches the threshold. The medians are shown beside it.
- Real data helps a mismatched simulator (`sim_verdicts`, `DATASET@sim:...` tasks, evaluated on
  the real task): entries with real data (offline_ratio > 0, e.g. H2O) against the entry trained
  on the simulator alone (offline_ratio = 0); "held" when the mean final score over seeds is
  higher by more than twice the standard error of the difference (sqrt of the sum of both
  means' squared standard errors over seeds), "NOT held" when that much lower, else "within
  noise" (the offline check's rule, offbench/reports/offline.py `verdict`).

The thresholds default to the normalized score of the task's `medium` behaviour policy
(tasks/policies/TASK/policies.json): the level the dataset's own data reach.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd

from offbench import hybrid, metrics, policies
from offbench.harness.store import Store, sweep_cells
from offbench.io import write_text_atomic
from offbench.provenance import record
from offbench.reports import leaderboard, plots
from offbench.reports import offline as offline_report

UNDECIDED = "undecided"  # the hybrid claim when no seed reaches the threshold
NEAR_RANDOM = 10.0  # a pre-train score below this is flagged: the claim is then nearly trivial


# ---- loading ------------------------------------------------------------------------------

def load(store_root: Path | str, sweeps: list[str], only: Collection[str] | None = None
         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed table, learning-curve rows) of the sweeps' cells (`only` those named: the cells
    their specs ask for now; store.sweep_cells), both with the cell's resolved offline ratio and
    budget, and the per-seed table with its command and compile time."""
    store = Store(store_root)
    cells = {c.name: c for c in sweep_cells(store, sweeps, only=only)}
    # exactly those cells (sweep_cells already left out a rebuilt dataset's old version)
    finals, curves, _ = leaderboard.load_store(store, cells=set(cells))
    extra = []
    for name, cell in cells.items():
        budget = cell.config()["budget"]
        info = json.loads((cell.path / "run.json").read_text())
        extra.append({"cell": name, "setup": compact_budget(budget),
                      "offline_ratio": budget.get("offline_ratio"),
                      "offline_updates": budget.get("offline_updates", 0),
                      "online_steps": budget.get("online_steps"), "utd": budget.get("utd"),
                      "command": info.get("command"), "compile_s": info.get("compile_s")})
    extra_df = pd.DataFrame(extra)
    # the leaderboard's tables may already carry some of these columns (its rows name their
    # cell and offline ratio since its O2O/hybrid sections): the cell's own values win
    finals = finals.drop(columns=[c for c in extra_df if c != "cell" and c in finals])
    finals = finals.merge(extra_df, on="cell", how="left")
    if "cell" not in curves:
        by_cell = finals.groupby(["profile", "mode", "algorithm", "dataset", "budget"]).cell.first()
        curves = curves.merge(by_cell.rename("cell").reset_index(),
                              on=["profile", "mode", "algorithm", "dataset", "budget"],
                              how="left")
    curves = curves.drop(columns=[c for c in ("offline_ratio", "offline_updates") if c in curves])
    curves = curves.merge(extra_df[["cell", "offline_ratio", "offline_updates"]], on="cell",
                          how="left")
    return finals, curves


BUDGET_KEYS = ("offline_updates", "online_steps", "offline_ratio", "utd", "warmup_steps",
               "eval_every", "eval_episodes")


def compact_budget(budget: dict) -> str:
    """The budget fields that differ between these checks' cells (the rest are defaults)."""
    return ", ".join(f"{k}={budget[k]}" for k in BUDGET_KEYS if budget.get(k) is not None)


def medium_level(task: str) -> float:
    """The normalized score of the task's `medium` behaviour policy (the default threshold)."""
    return float(policies.manifest(task)["policies"]["medium"]["normalized"])


def is_sim(dataset: str) -> bool:
    return hybrid.SIM_MARK in dataset


# ---- verdicts -----------------------------------------------------------------------------

def o2o_verdicts(finals: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm and dataset: pre-train, dip, final, gain, regret (means over seeds), the
    seeds that gained, and the verdict (module docstring)."""
    rows = []
    for (dataset, algorithm), g in finals.groupby(["dataset", "algorithm"], sort=True):
        gain = g.final_score - g.pretrain_score
        improved, n = int((gain > 0).sum()), len(g)
        se = _se(gain)
        row = {"claim": "O2O final > offline (pre-train) score", "dataset": dataset,
               "algorithm": algorithm, "seeds": n,
               "pretrain": g.pretrain_score.mean(), "dip": g.dip.mean(),
               "final": g.final_score.mean(), "gain": gain.mean(), "gain SE": se,
               "seeds_gained": f"{improved}/{n}", "regret": g.regret.mean()}
        if "gain_last3" in g:  # a smoother reading beside the verdict, never deciding it
            row["gain_last3"] = g.gain_last3.mean()
        rows.append({**row, "verdict": offline_report.verdict(gain.mean(), se)})
    return pd.DataFrame(rows)


def _se(values: pd.Series) -> float:
    """Standard error of the mean over seeds (NaN for one seed: no margin, within noise), as
    the offline report computes it."""
    return offline_report.standard_error(float(values.std(ddof=0)), len(values))


def last_means(curves: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Per cell and seed: the mean of the last k offline and of the last k online evaluations
    and their difference (single evaluations of 5 episodes are noisy)."""
    rows = []
    for (cell, seed), g in curves.groupby(["cell", "seed"], sort=True):
        g = g.sort_values("period")
        off = g[g.phase == "offline"].normalized_score.tail(k).mean()
        on = g[g.phase == "online"].normalized_score.tail(k).mean()
        rows.append({"cell": cell, "seed": int(seed), "pretrain_last3": off,
                     "final_last3": on, "gain_last3": on - off})
    return pd.DataFrame(rows)


def threshold_steps(curves: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """Per cell and seed: env steps of the first online evaluation at or above the dataset's
    threshold (NaN when none is) and the mean online score (the area under the curve)."""
    rows = []
    online = curves[curves.phase == "online"] if "phase" in curves else curves
    for (cell, seed), g in online.groupby(["cell", "seed"], sort=True):
        g = g.sort_values("env_steps")
        dataset = g.dataset.iloc[0]
        steps = metrics.steps_to_threshold(g.env_steps, g.normalized_score, thresholds[dataset])
        evaluations = g.env_steps.to_numpy(float)
        interval = evaluations[-1] - (evaluations[-2] if len(evaluations) > 1 else 0.0)
        rows.append({"cell": cell, "seed": int(seed), "threshold": thresholds[dataset],
                     "steps_to_threshold": math.nan if steps is None else float(steps),
                     # not reached: one evaluation after the budget (module docstring)
                     "censored_steps": evaluations[-1] + interval if steps is None
                     else float(steps),
                     "mean_online_score": float(g.normalized_score.mean())})
    return pd.DataFrame(rows)


def _median_steps(steps: pd.Series) -> float:
    return float(np.median(steps.fillna(np.inf)))  # not reached = infinitely many steps


def data_verdicts(finals: pd.DataFrame) -> pd.DataFrame:
    """Plain datasets: each algorithm with data (offline_ratio > 0) against itself without
    (offline_ratio = 0), by the median steps to threshold (module docstring)."""
    rows = []
    plain = finals[~finals.dataset.map(is_sim)]
    for dataset, d in plain.groupby("dataset", sort=True):
        without = d[d.offline_ratio == 0]
        for algorithm, w in d[d.offline_ratio > 0].groupby("algorithm"):
            base_name = algorithm.split("[")[0]
            base = without[without.algorithm.str.split("[").str[0] == base_name]
            for baseline, b in base.groupby("algorithm"):
                mw, mb = _median_steps(w.steps_to_threshold), _median_steps(b.steps_to_threshold)
                faster = b.censored_steps.mean() - w.censored_steps.mean()
                se = math.sqrt(_se(w.censored_steps) ** 2 + _se(b.censored_steps) ** 2)
                reached = w.steps_to_threshold.notna().any() or b.steps_to_threshold.notna().any()
                verdict = offline_report.verdict(faster, se) if reached else UNDECIDED
                rows.append({
                    "claim": "with data reaches the threshold in fewer env steps",
                    "dataset": dataset, "with data": algorithm, "without": baseline,
                    "threshold": w.threshold.iloc[0],
                    "median steps with": mw, "median steps without": mb,
                    "mean steps with": w.censored_steps.mean(),
                    "mean steps without": b.censored_steps.mean(), "difference SE": se,
                    "reached with": f"{int(w.steps_to_threshold.notna().sum())}/{len(w)}",
                    "reached without": f"{int(b.steps_to_threshold.notna().sum())}/{len(b)}",
                    "final with": w.final_score.mean(), "final without": b.final_score.mean(),
                    # the area under the curve: a reading beside the verdict, never deciding it
                    "mean score with": w.mean_online_score.mean(),
                    "mean score without": b.mean_online_score.mean(),
                    "verdict": verdict})
    return pd.DataFrame(rows)


def _sem2(scores: pd.Series) -> float:
    """Squared standard error of the mean over seeds (0 for one seed)."""
    return float(scores.var(ddof=1) / len(scores)) if len(scores) > 1 else 0.0


def sim_verdicts(finals: pd.DataFrame) -> pd.DataFrame:
    """Sim-to-real tasks: entries with real data against the simulator-only entry, by the mean
    final score on the real task and its standard error (module docstring)."""
    rows = []
    for dataset, d in finals[finals.dataset.map(is_sim)].groupby("dataset", sort=True):
        for baseline, b in d[d.offline_ratio == 0].groupby("algorithm"):
            for algorithm, w in d[d.offline_ratio > 0].groupby("algorithm"):
                difference = w.final_score.mean() - b.final_score.mean()
                se = math.sqrt(_sem2(w.final_score) + _sem2(b.final_score))
                rows.append({
                    "claim": "real data + simulator beats the simulator alone (on the real "
                             "task)", "dataset": dataset, "with real data": algorithm,
                    "sim only": baseline, "final with": w.final_score.mean(),
                    "final sim only": b.final_score.mean(),
                    "best with": w.best_score.mean(), "best sim only": b.best_score.mean(),
                    "difference SE": se, "verdict": offline_report.verdict(difference, se),
                    # what the baseline is (e.g. an RLPD agent set to plain SAC)
                    "sim only overrides": b.overrides.iloc[0]})
    return pd.DataFrame(rows)


# ---- plots --------------------------------------------------------------------------------

def _x(rows: pd.DataFrame) -> pd.Series:
    """One axis through both phases: offline evaluations at updates - offline_updates (<= 0),
    online ones at their env steps (> 0); the switch is at 0."""
    return rows.env_steps.where(rows.phase == "online", rows.updates - rows.offline_updates)


def plot_curves(curves: pd.DataFrame, out_dir: Path, prefix: str,
                thresholds: dict[str, float] | None = None) -> list[str]:
    def decorate(ax, dataset: str, rows: pd.DataFrame) -> None:
        if (rows.phase == "offline").any():
            ax.axvline(0, color="grey", lw=0.8, ls=":")
        if thresholds and dataset in thresholds and not is_sim(dataset):
            ax.axhline(thresholds[dataset], color="k", lw=0.8, ls="--", label="threshold")

    def labels(dataset: str, rows: pd.DataFrame, x: str) -> dict:
        xlabel = ("offline updates before the switch (<0) | online env steps (>0)"
                  if (rows.phase == "offline").any() else "online env steps")
        return {"title": f"{dataset} (mean ± std over seeds)", "xlabel": xlabel,
                "ylabel": "normalized score (real task)" if is_sim(dataset)
                else "normalized score"}

    def file_name(dataset: str) -> str:
        return f"{prefix}_{dataset.replace('/', '_').replace('@sim:', '_sim_')}.png"

    return plots.plot_curves(curves.assign(x=_x(curves)), out_dir, "dataset", x="x",
                             file_name=file_name, labels=labels, figsize=(6.5, 4), marker=".",
                             decorate=decorate)


# ---- writing ------------------------------------------------------------------------------

def _fmt(value: object) -> object:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return "not reached" if math.isinf(value) else "-"
        # env step counts read better without decimals
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.1f}"
    return value


def _table(df: pd.DataFrame) -> str:
    return df.map(_fmt).to_markdown(index=False)


def _header(title: str, finals: pd.DataFrame, budget: str, sweeps: list[str]) -> list[str]:
    prov = record()
    cells = finals.groupby("cell").first()
    setup = cells.reset_index()[["algorithm", "dataset", "setup", "overrides", "wall_s",
                                 "compile_s"]].rename(columns={"setup": "budget",
                                                               "wall_s": "wall (s)",
                                                               "compile_s": "compile (s)"})
    return [
        f"# {title}", "",
        f"Report by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores. Cells of "
        f"sweep(s) {', '.join(f'`{s}`' for s in sweeps)} (tasks/sweeps/); each cell's command, "
        "commit and versions are in its run.json (commands below).", "",
        f"Budget: {budget}", "",
        f"Training wall time: {cells.wall_s.sum() / 60:.1f} min over {len(cells)} cells (each "
        "cell's run.json has its own; they depend on what else ran on the machine).", "",
        "Normalized score = 100 * (return - ref_min) / (ref_max - ref_min) with the task's "
        "reference scores (random 0, expert 100; navigation tasks: 0 and 1, so the score is "
        "100 x the success rate); each evaluation averages `eval_episodes` "
        "episodes of the deterministic policy. Per cell (resolved budget and the overrides of "
        "the published hyperparameters):", "",
        _table(setup), ""]


def _commands(finals: pd.DataFrame) -> list[str]:
    return ["## Commands", "", *sorted({f"- `{c}`" for c in finals.command.dropna()}), ""]


def _verdict_lines(table: pd.DataFrame, describe: Callable[[pd.Series], str]) -> list[str]:
    return [f"- **{r.verdict}**: {describe(r)}" for _, r in table.iterrows()]


def write_o2o(store_root: Path | str, sweeps: list[str], out: Path, budget: str,
              only: Collection[str] | None = None,
              title: str = "O2O learning check") -> pd.DataFrame:
    """results/o2o/check.md (+ .csv per seed, PNG curves); returns the verdict table.
    only: the cells to read (`load`); title: the report's heading."""
    out.parent.mkdir(parents=True, exist_ok=True)
    finals, curves = load(store_root, sweeps, only)
    finals = finals[finals["mode"] == "o2o"]
    if finals.empty:
        raise ValueError(f"sweep(s) {sweeps} hold no complete o2o cell")
    curves = curves[curves["mode"] == "o2o"]
    finals = finals.assign(gain=finals.final_score - finals.pretrain_score).merge(
        last_means(curves), on=["cell", "seed"], how="left")
    verdicts = o2o_verdicts(finals)
    columns = ["algorithm", "dataset", "seed", "pretrain_score", "dip", "dip_drop",
               "final_score", "gain", "best_score", "regret", "pretrain_last3", "final_last3",
               "gain_last3", "diverged", "cell"]
    per_seed = finals[columns].sort_values(["dataset", "algorithm", "seed"])
    write_text_atomic(out.with_suffix(".csv"), per_seed.to_csv(index=False))
    plots = plot_curves(curves, out.parent, "curve_o2o")
    text = _header(title, finals, budget, sweeps) + [
        "Claim: online fine-tuning improves on the score at the end of offline pre-training. "
        "pretrain = last offline evaluation; dip = lowest online evaluation in the first 10% of "
        "the online budget; final = last online evaluation; gain = final - pretrain; regret = "
        "mean over online evaluations of 1 - score/100 (offbench/metrics.py). Verdict: held "
        "when the mean gain is more than twice its standard error over seeds (gain SE) above "
        "0, NOT held when that far below, else within noise (offbench/reports/mixed.py). "
        "gain_last3 (mean of the last 3 online minus the "
        "last 3 offline evaluations) is shown beside it as a less noisy reading; it does not "
        "decide the verdict.", "",
        "## Verdicts (means over seeds)", "",
        _table(verdicts.drop(columns="claim")), "",
        *_verdict_lines(verdicts, lambda r: (
            f"{r.algorithm} on {r.dataset}: pre-train {r.pretrain:.1f} -> final {r.final:.1f} "
            f"(gain {r.gain:+.1f}, {offline_report.margin_text(r['gain SE'])}, "
            f"{r.seeds_gained} seeds gained)"
            + (f"; pre-training ended near the random level (< {NEAR_RANDOM:.0f}), so the gain "
               "is mostly online learning" if r.pretrain < NEAR_RANDOM else ""))), "",
        "## Per seed", "", _table(per_seed.drop(columns="cell")), "",
        "## Learning curves", "",
        "Offline evaluations left of the dotted line (x = updates before the switch), online "
        "ones right of it (x = env steps).", "", *[f"![{p}]({p})" for p in plots], "",
        *_commands(finals)]
    write_text_atomic(out, "\n".join(text))
    return verdicts


def write_hybrid(store_root: Path | str, sweeps: list[str], out: Path, budget: str,
                 thresholds: dict[str, float] | None = None,
                 only: Collection[str] | None = None,
                 title: str = "Hybrid learning check") -> dict[str, pd.DataFrame]:
    """results/hybrid/check.md (+ .csv per seed, PNG curves); returns the verdict tables.
    thresholds: per dataset (default: the medium policy's level of its task); only: the cells
    to read (`load`); title: the report's heading."""
    out.parent.mkdir(parents=True, exist_ok=True)
    finals, curves = load(store_root, sweeps, only)
    finals = finals[finals["mode"] == "hybrid"]
    if finals.empty:
        raise ValueError(f"sweep(s) {sweeps} hold no complete hybrid cell")
    curves = curves[curves["mode"] == "hybrid"]
    given = dict(thresholds or {})
    thresholds = {d: given[d] if d in given else medium_level(t)  # navigation: no policies
                  for d, t in finals.groupby("dataset").task.first().items()}
    steps = threshold_steps(curves, thresholds)
    finals = finals.drop(columns=[c for c in ("steps_to_threshold",) if c in finals]).merge(
        steps, on=["cell", "seed"], how="left")
    data, sim = data_verdicts(finals), sim_verdicts(finals)
    columns = ["algorithm", "dataset", "offline_ratio", "seed", "threshold",
               "steps_to_threshold", "mean_online_score", "final_score", "best_score",
               "diverged", "cell"]
    per_seed = finals[columns].sort_values(["dataset", "algorithm", "seed"])
    write_text_atomic(out.with_suffix(".csv"), per_seed.to_csv(index=False))
    plots = plot_curves(curves, out.parent, "curve_hybrid", thresholds)
    online = curves[curves.phase == "online"]
    by_steps = online.groupby(["dataset", "algorithm", "env_steps"]).normalized_score.mean()
    text = _header(title, finals, budget, sweeps) + [
        "Thresholds (normalized score; the level of the task's medium behaviour policy unless "
        "given): " + ", ".join(f"{d}: {v:.1f}" for d, v in thresholds.items()
                               if not is_sim(d)) + ".", ""]
    if len(data):
        text += [
            "## Claim: with the offline data, the threshold is reached in fewer env steps", "",
            "Each algorithm with the dataset in half of every minibatch (offline_ratio > 0) "
            "against the same algorithm, budget and hyperparameters without it (offline_ratio "
            "= 0: from scratch; for RLPD that is SAC with RLPD's design choices -- ensemble, "
            "LayerNorm, UTD -- the from-scratch baseline of the RLPD paper, so the data is the "
            "only difference). Steps to threshold: env steps of the first evaluation at or "
            "above it. Verdict: held when the mean steps without the data exceed those with it "
            "by more than twice the standard error of the difference (difference SE), NOT held "
            "when that far the other way, else within noise; undecided when no seed reaches "
            "the threshold. In the means a seed that never reaches it counts as reaching it "
            "one evaluation after the budget (a lower bound on its steps); in the medians as "
            "infinitely many (not reached). The mean score over all online evaluations (area "
            "under the curve) and the final score are shown beside it; they do not decide the "
            "verdict.", "",
            _table(data.drop(columns="claim")), "",
            *_verdict_lines(data, lambda r: (
                f"{r['with data']} vs {r['without']} on {r.dataset} (threshold "
                f"{r.threshold:.1f}): mean steps {_fmt(r['mean steps with'])} vs "
                f"{_fmt(r['mean steps without'])} ({offline_report.margin_text(r['difference SE'])}"
                f"), median {_fmt(r['median steps with'])} vs "
                f"{_fmt(r['median steps without'])}")), ""]
    if len(sim):
        text += [
            "## Claim: real data + a mismatched simulator beats the simulator alone", "",
            "`DATASET@sim:...`: the agent interacts with a simulator whose dynamics differ "
            "(offbench/hybrid.py) and is evaluated on the real task; with real data "
            "(offline_ratio > 0) against the simulator-only entry (offline_ratio = 0). Verdict: "
            "held when the mean final score (last evaluation, real task) is higher by more than "
            "twice the standard error of the difference over seeds, NOT held when that much "
            "lower, else within noise.", "",
            _table(sim.drop(columns=["claim", "sim only overrides"])), "",
            *_verdict_lines(sim, lambda r: (
                f"{r['with real data']} vs {r['sim only']} (`{r['sim only overrides']}`) on "
                f"{r.dataset}: final {r['final with']:.1f} vs {r['final sim only']:.1f}")), ""]
    text += ["## Score vs env steps (mean over seeds)", ""]
    for dataset, g in by_steps.groupby(level="dataset"):
        pivot = g.droplevel("dataset").unstack("algorithm").reset_index()
        text += [f"{dataset}:", "", _table(pivot.astype(float)), ""]
    shown = per_seed.drop(columns="cell").assign(  # NaN steps: never reached in the budget
        steps_to_threshold=per_seed.steps_to_threshold.fillna(np.inf))
    text += ["## Per seed", "", _table(shown), "",
             "## Learning curves", "", *[f"![{p}]({p})" for p in plots], "",
             *_commands(finals)]
    write_text_atomic(out, "\n".join(text))
    return {"data": data, "sim": sim, "per_seed": per_seed}
