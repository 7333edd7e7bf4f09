"""What every report's plots share: one colour per algorithm (the same in every plot and
report, whatever else is plotted beside it), learning curves as mean ± std over seeds (one
figure per group of rows, `plot_curves`), and atomic PNG writes."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from offbench.io import write_bytes_atomic  # noqa: E402

# the baselines in a fixed order of tab20's colours; other names (submissions, variants of a
# grid) get one from a hash of their name, stable across runs and reports
KNOWN = ("bc", "td3_bc", "iql", "awac", "cql", "rebrac", "sac_n", "edac", "cal_ql", "spot",
         "wsrl", "rlpd", "h2o", "sac")


def algorithm_color(label: str) -> tuple:
    """The colour of an algorithm's label (`iql`, `iql[beta=3]`, `iql @ 20000 updates`)."""
    palette = plt.get_cmap("tab20").colors
    if label in KNOWN:
        return palette[KNOWN.index(label) % len(palette)]
    base = label.split("[")[0].split(" @ ")[0]
    if base in KNOWN and base != label:  # a variant: its algorithm's lighter twin in tab20
        index = KNOWN.index(base)
        return palette[(index + 14) % len(palette)] if index < 6 else palette[index]
    digest = int(hashlib.sha256(label.encode()).hexdigest(), 16)
    return plt.get_cmap("tab10").colors[digest % 10]


def mean_std_curves(ax, rows: pd.DataFrame, x: str, marker: str | None = None) -> None:
    """One line per `algorithm` of rows: the mean normalized score over seeds at each x, with
    a ± std band."""
    for algo, algo_rows in rows.groupby("algorithm"):
        by_x = algo_rows.groupby(x).normalized_score
        mean, std = by_x.mean(), by_x.std(ddof=0).fillna(0)
        color = algorithm_color(str(algo))
        ax.plot(mean.index, mean.values, marker=marker, label=algo, color=color)
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2, color=color)


def save(fig, path: Path) -> None:
    """The figure as a PNG, written atomically; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def plot_curves(curves: pd.DataFrame, out_dir: Path, by: str | list[str],
                x: str | Callable[[pd.DataFrame], str], file_name: Callable[[Any], str],
                labels: Callable[[Any, pd.DataFrame, str], dict],
                figsize: tuple[float, float] = (6, 4), marker: str | None = None,
                decorate: Callable[[Any, Any, pd.DataFrame], None] | None = None) -> list[str]:
    """Learning curves, one PNG per group of `curves` by `by` (mean ± std over seeds per
    algorithm, `mean_std_curves`), written to out_dir; returns the file names. What differs
    between reports: x, the x column (or rows -> the column); file_name(key); labels(key, rows,
    x) -> the axes' title/xlabel/ylabel; decorate(ax, key, rows): lines drawn before the
    legend (e.g. a threshold)."""
    names = []
    for key, rows in curves.groupby(by):
        column = x(rows) if callable(x) else x
        fig, ax = plt.subplots(figsize=figsize)
        mean_std_curves(ax, rows, column, marker=marker)
        if decorate is not None:
            decorate(ax, key, rows)
        ax.set(**labels(key, rows, column))
        ax.legend(fontsize=7)
        name = file_name(key)
        save(fig, out_dir / name)
        names.append(name)
    return names
