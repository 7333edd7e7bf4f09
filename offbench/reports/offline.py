"""The offline learning check (results/offline/check.md): every algorithm on a few datasets,
normalized scores (last and best evaluation, mean ± std over seeds), learning curves, and the
orderings the literature leads us to expect, each marked held, NOT held or within noise."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from offbench import policies
from offbench.harness.store import CellDir
from offbench.io import write_text_atomic
from offbench.provenance import record
from offbench.reports import plots


def run_label(run_dir: Path, info: dict) -> str:
    """The algorithm, with its hyperparameter variant when the run is a sweep cell of a grid
    (cell.json's `variant`), e.g. `rebrac[normalize_obs=true]`, and its minibatch sampler when
    that is not uniform, e.g. `iql[sampler=return:0.1]` (sampler:temperature)."""
    parts = [cell_config(run_dir).get("variant") or ""]
    loop = info.get("offline_config", {})
    if loop.get("sampler", "uniform") != "uniform":
        parts.append(f"sampler={loop['sampler']}:{loop['sampler_temperature']:g}")
    parts = [p for p in parts if p]
    return info["algorithm"] + (f"[{','.join(parts)}]" if parts else "")


def cell_config(run_dir: Path) -> dict:
    """A store cell's resolved config (cell.json); empty for a plain `offbench run` folder."""
    return CellDir(run_dir).config() if (run_dir / "cell.json").exists() else {}


def run_overrides(run_dir: Path) -> frozenset[str]:
    """The `key=value` settings a sweep cell was given, empty for a plain run."""
    return frozenset(cell_config(run_dir).get("overrides", ()))


def distinct_labels(runs: list[tuple[str, str, frozenset[str], int]]) -> list[str]:
    """Labels for (label, dataset, overrides, updates) runs such that two different runs of one
    algorithm on one dataset never share a name (they would be pooled as seeds of one run):
    each gets the settings only it has, and its update budget where those differ."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (label, dataset, _, _) in enumerate(runs):
        groups.setdefault((label, dataset), []).append(i)
    labels = [label for label, *_ in runs]
    for members in groups.values():
        if len(members) < 2:
            continue
        common = frozenset.intersection(*(runs[i][2] for i in members))
        budgets = {runs[i][3] for i in members}
        for i in members:
            label, _, overrides, updates = runs[i]
            extra = sorted(overrides - common)
            labels[i] = (label + (f"[{','.join(extra)}]" if extra else "")
                         + (f" ({updates // 1000}k updates)" if len(budgets) > 1 else ""))
    return labels


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed final table, all metrics rows), each row tagged with algorithm (its label,
    with any variant, and what sets it apart from other runs of that algorithm and dataset)
    and dataset."""
    finals, curves, loaded = [], [], []
    for run_dir in run_dirs:
        info = json.loads((run_dir / "run.json").read_text())
        if "per_seed" not in info:
            raise ValueError(f"{run_dir} has not finished (run.json has no results); finish it "
                             "with --resume first")
        loaded.append((run_dir, info))
    labels = distinct_labels([(run_label(d, info), info["dataset"], run_overrides(d),
                               info["offline_config"]["updates"]) for d, info in loaded])
    for (run_dir, info), label in zip(loaded, labels, strict=True):
        metrics = pd.read_csv(run_dir / "metrics.csv")
        metrics["algorithm"], metrics["dataset"] = label, info["dataset"]
        curves.append(metrics)
        for seed, result in info["per_seed"].items():
            finals.append({"algorithm": label, "dataset": info["dataset"],
                           "task": info.get("task"), "seed": int(seed), **result,
                           "updates": info["offline_config"]["updates"],
                           "eval_episodes": info["offline_config"]["eval_episodes"],
                           "command": info.get("command")})
    finals = pd.DataFrame(finals)
    twice = finals[finals.duplicated(["dataset", "algorithm", "seed"])]
    if len(twice):  # the same run given twice, or two copies of it: never count a seed twice
        row = twice.iloc[0]
        raise ValueError(f"seed {row.seed} of {row.algorithm} on {row.dataset} comes from more "
                         "than one of these runs; give each run once")
    return finals, pd.concat(curves, ignore_index=True)


def score_table(finals: pd.DataFrame) -> pd.DataFrame:
    grouped = finals.groupby(["dataset", "algorithm"])
    table = pd.DataFrame({
        "last": grouped.last_score.mean(), "last_std": grouped.last_score.std(ddof=0),
        "best": grouped.best_score.mean(), "best_std": grouped.best_score.std(ddof=0),
        "seeds": grouped.seed.count(), "diverged": grouped.diverged.sum(),
        "updates": grouped.updates.first(), "eval_episodes": grouped.eval_episodes.first()})
    return table.reset_index()


def q_growth(curves: pd.DataFrame) -> pd.Series:
    """Per (dataset, algorithm): the relative change of the critic's mean Q (`q_mean`, mean over
    seeds) over the last evaluation period, (Q_last - Q_prev) / |Q_prev|. A critic still far
    from its fixed point keeps rising (tens of % per period); a converged one hardly moves.
    NaN where the algorithm logs no q_mean or ran one evaluation period."""
    if "q_mean" not in curves:
        return pd.Series(dtype=float)
    means = curves.groupby(["dataset", "algorithm", "updates"]).q_mean.mean().dropna()

    def growth(series: pd.Series) -> float:
        if len(series) < 2:
            return float("nan")
        last, prev = series.iloc[-1], series.iloc[-2]
        return float((last - prev) / abs(prev)) if prev else float("nan")
    return means.groupby(level=["dataset", "algorithm"]).apply(growth)


def standard_error(std: float, seeds: int) -> float:
    """Standard error of a mean over seeds from the population std (ddof 0) the table keeps."""
    return std / math.sqrt(seeds - 1) if seeds > 1 else float("nan")


def verdict(difference: float, se: float) -> str:
    """'held' when the difference is more than twice its standard error above 0, 'NOT held' when
    that far below, else 'within noise' (a few seeds cannot tell; one seed never can)."""
    if not se >= 0:  # NaN: one seed
        return "within noise"
    if difference > 2 * se:
        return "held"
    return "NOT held" if difference < -2 * se else "within noise"


def margin_text(se: float) -> str:
    return f"2 SE {2 * se:.1f}" if se >= 0 else "one seed: no margin"


def uniform_label(label: str) -> str | None:
    """The label of the same run with uniform sampling, for a trajectory-weighted run's label
    (`iql[sampler=return:0.1]` -> `iql`, `rebrac[a=1,sampler=advantage:0.1]` -> `rebrac[a=1]`);
    None for a uniform run's."""
    if "sampler=" not in label:
        return None
    return re.sub(r",?sampler=[^,\]]+", "", label).replace("[]", "").replace("[,", "[")


def fixed_goal(dataset: str) -> bool:
    """A navigation dataset relabeled to the evaluation goal (PointMaze's kind `fixed`,
    maze2d.py; every AntMaze kind, antmaze.py)."""
    from offbench.data import antmaze, ids, maze2d

    try:
        kind = ids.parse(dataset.split("+")[0]).kind
    except ValueError:
        return False
    return kind == maze2d.FIXED_KIND or kind in antmaze.KINDS


def beats(rows: pd.DataFrame, better: str, worse: str, statement: str
          ) -> tuple[str, str, str]:
    """(statement, verdict, detail) of "`better` beats `worse`" on one dataset's rows (indexed
    by algorithm): the difference of mean last scores against twice its standard error."""
    a, b = rows.loc[better], rows.loc[worse]
    diff = a["last"] - b["last"]
    margin = math.hypot(standard_error(a.last_std, a.seeds), standard_error(b.last_std, b.seeds))
    return (statement, verdict(diff, margin),
            f"{a['last']:.1f} vs {b['last']:.1f}; difference {diff:+.1f}, {margin_text(margin)}")


def expectations(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(statement, verdict, detail) for the orderings issue 5 asks about: every offline RL method
    beats BC on medium-replay data (and on the fixed-goal navigation data, where
    success needs stitching), every method scores above the medium policy on medium-expert data;
    and the data-quality issue's: a trajectory-weighted run beats the same algorithm with
    uniform sampling (Hong et al. 2023), wherever both ran on a dataset. Compared on the last
    score's mean over seeds, with twice the standard error of the difference as the margin."""
    checks = []
    for dataset in table.dataset.unique():
        rows = table[table.dataset == dataset].set_index("algorithm")
        se = {a: standard_error(r.last_std, r.seeds) for a, r in rows.iterrows()}
        if ("medium-replay" in dataset or fixed_goal(dataset)) and "bc" in rows.index:
            for algo in rows.index.drop("bc"):
                checks.append(beats(rows, algo, "bc", f"{algo} beats bc on {dataset}"))
        if "medium-expert" in dataset:
            task = dataset.split("-")[0]
            medium = policies.manifest(task)["policies"]["medium"]["normalized"]
            for algo in rows.index:
                diff = rows.loc[algo, "last"] - medium
                checks.append((f"{algo} scores above medium level on {dataset}",
                               verdict(diff, se[algo]),
                               f"{rows.loc[algo, 'last']:.1f} vs medium policy {medium:.1f}; "
                               f"{margin_text(se[algo])}"))
        for algo in rows.index:
            uniform = uniform_label(algo)
            if uniform in rows.index:
                checks.append(beats(rows, algo, uniform,
                                    f"{algo} beats {uniform} (uniform sampling) on {dataset}"))
    return checks


def plot_curves(curves: pd.DataFrame, out_dir: Path, prefix: str = "check") -> list[str]:
    """One PNG per dataset, PREFIX_DATASET.png (the report's file stem: reports sharing a
    folder keep their own plots)."""
    return plots.plot_curves(
        curves, out_dir, "dataset", x="updates",
        file_name=lambda dataset: f"{prefix}_{dataset.replace('/', '_')}.png",
        labels=lambda dataset, rows, x: {"title": dataset, "xlabel": x,
                                         "ylabel": "normalized score"})


def write_report(run_dirs: list[Path], out: Path, budget: str,
                 title: str = "Offline learning check") -> pd.DataFrame:
    out.parent.mkdir(parents=True, exist_ok=True)
    finals, curves = load_runs(run_dirs)
    table = score_table(finals)
    growth = q_growth(curves)
    table["q_growth"] = [growth.get((d, a), float("nan"))
                         for d, a in zip(table.dataset, table.algorithm, strict=True)]
    write_text_atomic(out.with_suffix(".csv"), finals.to_csv(index=False))
    checks = expectations(table)
    plots = plot_curves(curves, out.parent, out.stem)
    prov = record()
    shown = table.assign(
        last=[f"{m:.1f} ± {s:.1f}" for m, s in zip(table["last"], table.last_std, strict=True)],
        best=[f"{m:.1f} ± {s:.1f}" for m, s in zip(table.best, table.best_std, strict=True)],
        q_growth=["" if pd.isna(g) else f"{100 * g:+.0f}%" for g in table.q_growth],
    ).drop(columns=["last_std", "best_std"])
    text = [
        f"# {title}", "",
        f"Report by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores. Each run's own "
        "command, commit and versions are in its run.json (commands listed below).", "",
        f"Budget: {budget}", "",
        "Normalized score = 100 * (return - ref_min) / (ref_max - ref_min) with the task's "
        "reference scores (tasks/policies; navigation tasks: 0 and 1, so the score is 100 x the "
        "success rate); last = the final policy's evaluation (the budget's "
        "final_eval_episodes, else the last periodic one), best = the best periodic evaluation "
        "(CORL reports both; last can exceed best, being another and larger evaluation), "
        "mean ± std over seeds; periodic evaluations average `eval_episodes` episodes of the "
        "deterministic policy. q_growth: how much the critic's mean Q "
        "(mean over seeds) changed over the last evaluation period, relative to where it was: "
        "a critic still far from its fixed point rises by tens of % per period, one near it "
        "hardly moves (empty: the algorithm logs no q_mean).",
        "", shown.to_markdown(index=False), "",
        # a section only where an ordering applies (a diagnosis of other datasets has none)
        *(["## Expected orderings", "",
           "Held: the difference in mean last score is more than twice its standard error (over "
           "seeds) in the expected direction; NOT held: that far the other way; within noise: "
           "these seeds cannot tell.", "",
           *[f"- {held}: {text} ({detail})" for text, held, detail in checks], ""]
          if checks else []),
        "## Learning curves", "", *[f"![{p}]({p})" for p in plots], "",
        "## Commands", "", *sorted({f"- `{c}`" for c in finals.command.dropna()}), ""]
    write_text_atomic(out, "\n".join(text))
    return table
