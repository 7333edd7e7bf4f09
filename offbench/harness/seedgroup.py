"""`--seed-group auto`: the seed grouping that is fastest for an algorithm on this kind of
device, so that vmapping seeds never loses to running them one after another.

On an accelerator, all seeds at once (one vmapped program fills the device). On CPU, the
grouping comes from the committed throughput tables of `make perf` (results/perf/offline.csv:
total seed-updates/s of 1 seed and of 8 seeds at once; results/perf/seed-groups/offline.csv: 8
seeds in vmapped groups; results/perf/model-based/offline.csv: MOPO, MOBILE and DT, both;
results/perf/o2o.csv: 1 and 4 seeds of the online loop), measured
with each algorithm's published network: of "all at once", "one after another" (group 1,
whose total rate is the 1-seed rate) and every measured group size that divides the cell's
seeds, the one with the highest total rate. An algorithm the tables do not have runs all
seeds at once. The group is a speed knob, not part of a cell's identity (it changes results
only to float rounding); run.json records the one used. `offbench bench` uses auto by default.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
TABLES = (ROOT / "results" / "perf" / "offline.csv",
          ROOT / "results" / "perf" / "seed-groups" / "offline.csv",
          ROOT / "results" / "perf" / "model-based" / "offline.csv",
          ROOT / "results" / "perf" / "o2o.csv")


def measured_rates(algorithm: str, tables: tuple[Path, ...] = TABLES) -> dict[int | None, float]:
    """Total seed-updates/s by seed group (None: all seeds at once, 1: one after another).
    The online tables (results/perf/o2o.csv: algorithms with no offline row, e.g. RLPD) are
    read at one update per env step, the rate that compares vmapped seeds with one seed."""
    rates: dict[int | None, float] = {}
    for path in tables:
        if not path.exists():
            continue
        df = pd.read_csv(path)
        if "utd" in df:
            df = df[df.utd == 1]
        for row in df[df.algorithm == algorithm].itertuples():
            group = getattr(row, "seed_group", None)
            if row.seeds == 1:
                rates[1] = float(row.updates_per_s)
            elif group is None or pd.isna(group):
                rates[None] = float(row.updates_per_s)
            else:
                rates[int(group)] = float(row.updates_per_s)
    return rates


def choose(seed_group: int | str | None, algorithm: str, seeds: int, platform: str,
           tables: tuple[Path, ...] = TABLES) -> tuple[int | None, str]:
    """(the seed group to run with, why); `seed_group` other than "auto" is returned as is."""
    if seed_group != "auto":
        return seed_group, "given"
    if platform != "cpu":
        return None, f"auto: all {seeds} seeds at once on {platform}"
    rates = measured_rates(algorithm, tables)
    usable = {g: r for g, r in rates.items() if g is None or (g < seeds and seeds % g == 0)}
    if not usable:
        return None, f"auto: all seeds at once ({algorithm} has no rows in results/perf)"
    best = max(usable, key=lambda g: (usable[g], g is None))
    shown = ", ".join(f"{'all' if g is None else g}: {r:.1f}" for g, r in sorted(
        usable.items(), key=lambda kv: -kv[1]))
    return best, f"auto: seed group {best or 'all'} (results/perf seed-updates/s by group: {shown})"
