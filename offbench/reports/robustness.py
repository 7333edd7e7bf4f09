"""The robustness report (`kind = "robustness"` in a sweep spec's [[report]]): how much each
algorithm's score drops when its dataset is corrupted (offbench/data/transforms.py).

Runs are grouped by their clean dataset, the id without its `+corrupt=...` transforms (other
transforms such as `+mix` stay: a corrupted mixture is compared with the clean mixture), and by
condition, the corruption without its rate (`obs:random, eps 1.0`). For each algorithm:

- score: the mean over seeds of the last score (the final evaluation), on the clean dataset and
  under each corruption;
- drop = clean score - corrupted score (positive: the corruption hurt);
- AUC, where a condition has two or more corruption rates: the area under the
  score-vs-corruption-rate curve from rate 0 (the clean score) to the largest rate (trapezoids),
  divided by that rate, so it reads as the average score over [0, max rate] in score points;
- which algorithm drops less, per clean dataset and corrupted dataset, for each pair X, Y:
  drop(Y) - drop(X), "held" (X drops less) when its CI lies above 0, "NOT held" when below,
  else "within noise" (RIQL's claim is that it drops less than IQL);
- 95% percentile-bootstrap CIs over seeds for each, from rliable as the leaderboard uses it
  (`leaderboard._seeded`, seeded: the same numbers on every run); the datasets a drop, an AUC
  or a difference of drops is computed from are resampled independently of each other
  (rliable's StratifiedIndependentBootstrap, as for P(X > Y)).

A run whose dataset carries two corruptions at once is reported under the combined condition
with no rate axis (no AUC)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from offbench.data import transforms
from offbench.io import write_text_atomic
from offbench.provenance import record
from offbench.reports import plots
from offbench.reports.leaderboard import _seeded
from offbench.reports.offline import load_runs

CLEAN = "clean"


def condition(dataset_id: str) -> tuple[str, str, float]:
    """dataset id -> (clean dataset id, condition, corruption rate); (id, "clean", 0.0) for a
    dataset without corruption."""
    variant = transforms.split(dataset_id)
    kept = [t for t in variant.transforms if t.name != "corrupt"]
    corrupt = [t for t in variant.transforms if t.name == "corrupt"]
    clean = variant.base + "".join(t.text for t in kept)
    if kept and variant.seed:
        clean += f"+seed={variant.seed}"
    if not corrupt:
        return clean, CLEAN, 0.0
    if len(corrupt) == 1:
        field, kind, rate, eps = corrupt[0].args
        return clean, f"{field}:{kind}, eps {eps:g}", float(rate)
    return clean, " + ".join(re.sub(r"^\+corrupt=", "", t.text) for t in corrupt), float("nan")


def _interval(score_dict: dict, func, reps: int, seed: int) -> dict[str, tuple]:
    """key -> (point, ci_low, ci_high) of func over rliable's bootstrap of each key's matrices."""
    from rliable import library as rly

    if not score_dict:
        return {}
    with _seeded(seed):
        points, intervals = rly.get_interval_estimates(
            score_dict, func, reps=reps, random_state=np.random.RandomState(seed))
    return {k: (float(np.ravel(points[k])[0]), float(np.ravel(intervals[k])[0]),
                float(np.ravel(intervals[k])[1])) for k in score_dict}


def _mean(x: np.ndarray) -> np.ndarray:
    return np.array([x.mean()])


def _drop(clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    return np.array([clean.mean() - corrupted.mean()])


def auc(rates: np.ndarray, scores: np.ndarray) -> float:
    """Trapezoid area under scores(rates), rates starting at 0, divided by the largest rate."""
    order = np.argsort(rates)
    rates, scores = np.asarray(rates, float)[order], np.asarray(scores, float)[order]
    area = float(np.sum((scores[1:] + scores[:-1]) * np.diff(rates)) / 2)
    return area / float(rates[-1])


def _drop_difference(clean_x, corrupted_x, clean_y, corrupted_y) -> np.ndarray:
    """drop(Y) - drop(X): positive when X drops less."""
    return np.array([(clean_y.mean() - corrupted_y.mean())
                     - (clean_x.mean() - corrupted_x.mean())])


def tables(finals: pd.DataFrame, reps: int = 5000, seed: int = 0
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scores, areas, comparisons): per (clean dataset, algorithm, condition, rate) the mean
    last score and the drop from clean with their CIs; per (clean dataset, algorithm,
    condition with >= 2 rates) the AUC with its CI; per (clean dataset, condition, rate, pair
    of algorithms X, Y with X after Y by name, e.g. riql, iql) drop(Y) - drop(X) with its CI
    and the verdict on "X drops less than Y" (the mirrored statement has the mirrored CI)."""
    finals = finals.copy()
    parts = [condition(d) for d in finals.dataset]
    finals["clean"] = [p[0] for p in parts]
    finals["condition"] = [p[1] for p in parts]
    finals["rate"] = [p[2] for p in parts]
    matrix = {key: rows.last_score.to_numpy(float)[:, None] for key, rows in
              finals.groupby(["clean", "algorithm", "condition", "rate"], dropna=False)}
    keys = list(matrix)
    name = {k: "|".join(map(str, k)) for k in keys}
    score = _interval({name[k]: matrix[k] for k in keys}, _mean, reps, seed)
    clean_of = {(k[0], k[1]): matrix[k] for k in keys if k[2] == CLEAN}
    drops = {name[k]: (clean_of[(k[0], k[1])], matrix[k]) for k in keys
             if k[2] != CLEAN and (k[0], k[1]) in clean_of}
    drop = _interval(drops, _drop, reps, seed)
    rows = []
    for k in keys:
        point, low, high = score[name[k]]
        d = drop.get(name[k], (np.nan, np.nan, np.nan))
        rows.append({"dataset": k[0], "algorithm": k[1], "condition": k[2], "rate": k[3],
                     "seeds": matrix[k].shape[0], "score": point, "score_low": low,
                     "score_high": high, "drop": d[0], "drop_low": d[1], "drop_high": d[2]})
    scores = pd.DataFrame(rows).sort_values(["dataset", "algorithm", "rate", "condition"],
                                            key=lambda c: c.map(_clean_first)
                                            if c.name == "condition" else c)
    areas = []
    groups: dict[tuple, list] = {}
    for k in keys:
        if k[2] != CLEAN and np.isfinite(k[3]) and (k[0], k[1]) in clean_of:
            groups.setdefault((k[0], k[1], k[2]), []).append(k)
    for (clean, algo, cond), members in groups.items():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda k: k[3])
        rates = np.array([0.0] + [k[3] for k in members])
        matrices = (clean_of[(clean, algo)], *(matrix[k] for k in members))
        point, low, high = _interval(
            {"auc": matrices}, lambda *m, r=rates: np.array([auc(r, [x.mean() for x in m])]),
            reps, seed)["auc"]
        areas.append({"dataset": clean, "algorithm": algo, "condition": cond,
                      "rates": ", ".join(f"{r:g}" for r in rates), "auc": point,
                      "auc_low": low, "auc_high": high})
    compared = {}
    for k in keys:
        for other in keys:
            if (k[0], k[2:]) == (other[0], other[2:]) and k[1] > other[1] and k[2] != CLEAN \
                    and (k[0], k[1]) in clean_of and (other[0], other[1]) in clean_of:
                compared[f"{name[k]}|{other[1]}"] = (
                    (k[0], k[2], k[3], k[1], other[1]),
                    (clean_of[(k[0], k[1])], matrix[k], clean_of[(other[0], other[1])],
                     matrix[other]))
    differences = _interval({key: m for key, (_, m) in compared.items()}, _drop_difference,
                            reps, seed)
    comparisons = []
    for key, ((clean, cond, rate, x, y), _) in compared.items():
        point, low, high = differences[key]
        comparisons.append({"dataset": clean, "condition": cond, "rate": rate, "x": x, "y": y,
                            "difference": point, "low": low, "high": high,
                            "verdict": "held" if low > 0 else "NOT held" if high < 0
                            else "within noise"})
    return scores.reset_index(drop=True), pd.DataFrame(
        areas, columns=["dataset", "algorithm", "condition", "rates", "auc", "auc_low",
                        "auc_high"]), pd.DataFrame(
        comparisons, columns=["dataset", "condition", "rate", "x", "y", "difference", "low",
                              "high", "verdict"])


def _clean_first(value):
    return "" if value == CLEAN else value


def _ci(point: float, low: float, high: float) -> str:
    if not np.isfinite(point):
        return ""
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def plot(scores: pd.DataFrame, out_dir: Path, prefix: str) -> list[str]:
    """Per clean dataset: score (mean, 95% CI bars) against corruption rate, one colour per
    algorithm, one marker and line style per condition, each line starting at the clean score
    (rate 0); each algorithm's points shifted by 1% of the rate axis so bars do not overlap."""
    import matplotlib.pyplot as plt

    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    names = []
    for dataset, rows in scores.groupby("dataset"):
        fig, ax = plt.subplots(figsize=(6, 4))
        conditions = sorted(c for c in rows.condition.unique() if c != CLEAN)
        algos = sorted(rows.algorithm.unique())
        span = float(np.nanmax(rows.rate)) or 1.0
        for j, (algo, algo_rows) in enumerate(rows.groupby("algorithm")):
            color = plots.algorithm_color(str(algo))
            # a small shift per algorithm keeps overlapping CI bars apart
            algo_rows = algo_rows.assign(rate=algo_rows.rate
                                         + (j - (len(algos) - 1) / 2) * 0.01 * span)
            clean = algo_rows[algo_rows.condition == CLEAN]
            for i, cond in enumerate(conditions):
                line = pd.concat([clean, algo_rows[algo_rows.condition == cond]])
                line = line[np.isfinite(line.rate)].sort_values("rate")
                if line.empty:
                    continue
                ax.errorbar(line.rate, line.score,
                            yerr=[line.score - line.score_low, line.score_high - line.score],
                            color=color, linestyle=styles[i % len(styles)],
                            marker=markers[i % len(markers)], capsize=3,
                            label=f"{algo}: {cond}")
            if not conditions and len(clean):
                ax.errorbar(clean.rate, clean.score, color=color, marker="o",
                            yerr=[clean.score - clean.score_low, clean.score_high - clean.score],
                            capsize=3, label=f"{algo}: clean")
        ax.set(title=dataset, xlabel="corruption rate", ylabel="normalized score (last)")
        ax.legend(fontsize=7)
        name = f"{prefix}_{dataset.replace('/', '_').replace(':', '_')}.png"
        plots.save(fig, out_dir / name)
        names.append(name)
    return names


def write_report(run_dirs: list[Path], out: Path, budget: str,
                 title: str = "Robustness under data corruption", reps: int = 5000
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    out.parent.mkdir(parents=True, exist_ok=True)
    finals, _ = load_runs(run_dirs)
    scores, areas, comparisons = tables(finals, reps)
    write_text_atomic(out.with_suffix(".csv"), scores.to_csv(index=False))
    if len(areas):
        write_text_atomic(out.with_name(out.stem + "_auc.csv"), areas.to_csv(index=False))
    pngs = plot(scores, out.parent, out.stem)
    prov = record()
    shown = pd.DataFrame({
        "dataset": scores.dataset, "algorithm": scores.algorithm,
        "condition": scores.condition,
        "rate": ["" if c == CLEAN or not np.isfinite(r) else f"{r:g}"
                 for c, r in zip(scores.condition, scores.rate, strict=True)],
        "seeds": scores.seeds,
        "score [95% CI]": [_ci(*v) for v in zip(scores.score, scores.score_low,
                                                  scores.score_high, strict=True)],
        "drop [95% CI]": [_ci(*v) for v in zip(scores["drop"], scores.drop_low, scores.drop_high,
                                                 strict=True)]})
    area_text = (["## Area under the score-vs-rate curve", "",
                  "Trapezoids from rate 0 (the clean score) to the largest rate, divided by that "
                  "rate: the average score over the rates, in score points; 95% CI as above.",
                  "",
                  pd.DataFrame({"dataset": areas.dataset, "algorithm": areas.algorithm,
                                "condition": areas.condition, "rates": areas.rates,
                                "AUC [95% CI]": [_ci(*v) for v in zip(
                                    areas.auc, areas.auc_low, areas.auc_high, strict=True)]}
                               ).to_markdown(index=False), ""]
                 if len(areas) else
                 ["No condition here has two or more corruption rates, so no area under the "
                  "score-vs-rate curve is reported.", ""])
    compare_text = (["## Which algorithm drops less", "",
                     "Per corrupted dataset and pair of algorithms X, Y: drop(Y) - drop(X) "
                     "with its 95% CI (positive: X loses less of its clean score); held when the "
                     "CI lies above 0, NOT held when below, else within noise.", "",
                     *[f"- {row.verdict}: {row.x} drops less than {row.y} on {row.dataset} "
                       f"under {row.condition}"
                       + (f" at rate {row.rate:g}" if np.isfinite(row.rate) else "")
                       + f" (drop({row.y}) - drop({row.x}) = "
                       f"{_ci(row.difference, row.low, row.high)})"
                       for row in comparisons.itertuples()], ""]
                    if len(comparisons) else [])
    text = [
        f"# {title}", "",
        f"Report by `{prov['command']}` at commit `{prov['git_commit']}` on {prov['date']}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores. Each run's own "
        "command, commit and versions are in its run.json.", "",
        f"Budget: {budget}", "",
        "Score: the normalized last score (final evaluation), mean over seeds. Drop: clean "
        "score - corrupted score (positive: the corruption hurt). Condition: the corruption "
        "(field:kind, scale eps) of offbench/data/transforms.py, rate: the fraction of the "
        "transitions corrupted. 95% CIs: percentile bootstrap over seeds (rliable, "
        f"{reps} resamples; a drop's two datasets resampled independently); with 3 seeds they "
        "are wide, and a drop whose CI contains 0 is within noise.", "",
        shown.to_markdown(index=False), "",
        *compare_text,
        *area_text,
        "## Score against corruption rate", "", *[f"![{p}]({p})" for p in pngs], ""]
    write_text_atomic(out, "\n".join(text))
    return scores, areas, comparisons
