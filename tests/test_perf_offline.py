"""The offline throughput benchmark: rows consistent with each other at tiny sizes, and the
report's ratios and target verdicts computed right from hand-made numbers (written to a
temporary folder, never results/)."""

import numpy as np
import pandas as pd

from offbench.perf import offline as perf_offline

PROV = {"command": "test", "git_commit": "abc", "date": "today",
        "machine": {"cpu": "cpu", "cores": 2}}


def test_offline_perf_rows_for_one_and_eight_seeds():
    rows = perf_offline.bench_algorithm("bc", "halfcheetah", updates=2, repeats=1)
    one, eight, grouped = rows
    assert (one["seeds"], eight["seeds"], grouped["seeds"]) == (1, 8, 8)
    assert (one["seed_group"], eight["seed_group"], grouped["seed_group"]) == (None, None, 2)
    for row in rows:  # total rate = seeds x each seed's rate; FLOP/s = FLOPs x total rate
        rate = row["updates_per_s"]
        np.testing.assert_allclose(rate, row["seeds"] * row["per_seed_updates_per_s"])
        np.testing.assert_allclose(row["achieved_flops"], row["flops_per_update"] * rate)
    assert one["flops_per_update"] > 0 and one["compile_run_s"] > 0
    assert one["run_eval_s"] > 0 and one["run_s"] > 0  # their split is timing, not tested


def _df(name, one_rate, eight_rate, flops, compile_run, grouped_rate):
    return [{"algorithm": name, "seeds": 1, "seed_group": None, "updates_per_s": one_rate,
             "per_seed_updates_per_s": one_rate, "compile_updates_s": 1.0,
             "flops_per_update": flops, "achieved_flops": flops * one_rate,
             "compile_run_s": compile_run, "run_s": 2.0, "run_eval_s": 0.5},
            {"algorithm": name, "seeds": 8, "seed_group": None, "updates_per_s": eight_rate,
             "per_seed_updates_per_s": eight_rate / 8, "compile_updates_s": 1.0,
             "flops_per_update": flops, "achieved_flops": flops * eight_rate},
            {"algorithm": name, "seeds": 8, "seed_group": 2, "updates_per_s": grouped_rate,
             "per_seed_updates_per_s": grouped_rate / 8, "compile_updates_s": 1.0,
             "flops_per_update": flops, "achieved_flops": flops * grouped_rate}]


def test_offline_perf_report_ratios_and_targets(tmp_path):
    peak = 100e9
    # "fast": 1 seed at 40% of peak, 8 seeds 1.5x its total (60%); "slow": vmapping loses (0.8x,
    # 32% of peak) and its whole run compiles in 70 s, but in groups of 2 it wins (1.1x).
    df = pd.DataFrame(_df("fast", 100.0, 150.0, 0.4e9, 10.0, 140.0)
                      + _df("slow", 100.0, 80.0, 0.4e9, 70.0, 110.0))
    df["fraction_of_peak"] = df.achieved_flops / peak
    perf_offline.write_report(df, peak, tmp_path, PROV, "halfcheetah", updates=200)
    text = (tmp_path / "offline.md").read_text()
    assert "- 8 seeds >= 50% of peak: met by fast; missed by slow" in text
    assert "- seed-updates/s 8 vs 1 >= 1: met by fast; missed by slow" in text
    assert "- the same with 8 seeds in groups of 2: met by fast, slow; missed by none" in text
    assert "- run compile <= 60 s: met by fast; missed by slow" in text
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith(("| fast", "| slow"))]
    throughput, split = {r[0]: r[1:] for r in rows[:2]}, {r[0]: r[1:] for r in rows[2:]}
    # columns: 1 seed, 8 total, seed-updates 8 vs 1, the same in groups of 2, each seed's rate,
    # bound 1/(8 f) with f = 0.4
    assert throughput["fast"][2:6] == ["1.5", "1.4", "0.188", "0.312"]
    assert throughput["slow"][2:6] == ["0.8", "1.1", "0.1", "0.312"]
    # split: compile run, compile updates, 5000 updates at 100/s = 50 s, eval 0.5 s, share
    assert split["fast"] == ["10", "1", "50", "0.5", "0.0099"]
    assert "- evaluation does not dominate (share < 0.5): met by fast, slow; missed by none" in text
