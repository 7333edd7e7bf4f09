"""The O2O and hybrid learning-check reports (offbench/reports/mixed.py) on a store written by
hand: per-seed numbers, steps to threshold and every verdict checked against values computed by
hand here; only the named sweeps' cells are read. No training."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offbench import cli, io, policies
from offbench.harness import store
from offbench.reports import mixed

SIM = "hopper-medium-replay-100k@sim:gravity=2.0"


def mixed_cell(root: Path, algorithm: str, dataset: str, mode: str, curves: dict, ratio: float,
               sweep: str, offline: dict | None = None, variant: str = "",
               complete: bool = True) -> store.CellDir:
    """A finished O2O/hybrid cell: curves = {seed: [online scores at 100, 200, ... steps]},
    offline = {seed: [offline scores every 50 updates]} (o2o). run.json's per_seed holds what
    o2o.summarize would write."""
    offline = offline or {}
    n_off = 50 * len(next(iter(offline.values()), []))
    budget = {"offline_updates": n_off, "online_steps": 100 * len(next(iter(curves.values()))),
              "offline_ratio": ratio, "utd": 1, "eval_every": 50, "eval_episodes": 5}
    config = {"algorithm": algorithm, "module": f"offbench_baselines.{algorithm}",
              "dataset": dataset,
              "mode": mode, "budget": budget, "algo_config": {}, "overrides": ["hidden=8,8"],
              "variant": variant, "seeds": len(curves), "first_seed": 0, "profile": "cpu"}
    cell = store.Store(root).register(config, sweep)
    rows, results = [], {}
    for seed, online in curves.items():
        pre = offline.get(seed, [])
        rows += [{"seed": seed, "period": p, "phase": "offline", "updates": 50 * (p + 1),
                  "env_steps": 0, "normalized_score": s} for p, s in enumerate(pre)]
        rows += [{"seed": seed, "period": len(pre) + p, "phase": "online",
                  "updates": n_off + 100 * (p + 1), "env_steps": 100 * (p + 1),
                  "normalized_score": s} for p, s in enumerate(online)]
        result = {"last_score": online[-1], "best_score": max(online),
                  "final_score": online[-1], "diverged": False}
        if mode == "o2o":
            result.update(pretrain_score=pre[-1], dip=online[0], dip_drop=pre[-1] - online[0],
                          regret=float(np.mean([1 - s / 100 for s in online])))
        results[str(seed)] = result
    io.write_text_atomic(cell.path / "metrics.csv", pd.DataFrame(rows).to_csv(index=False))
    io.write_text_atomic(cell.path / "run.json", json.dumps(
        {"task": "hopper", "per_seed": results, "git_commit": "abc", "wall_s": 60.0,
         "compile_s": 5.0, "command": f"offbench sweep {sweep}"}))
    if complete:
        cell.set_status("complete")
    return cell


@pytest.fixture
def medium_40(monkeypatch):
    monkeypatch.setattr(policies, "manifest",
                        lambda task: {"policies": {"medium": {"normalized": 40.0}}})


def test_o2o_verdicts_and_per_seed_numbers_by_hand(tmp_path):
    root = tmp_path / "store"
    # cal_ql: gains 30-20=+10, 32-20=+12, 34-20=+14 -> mean 12, SE 2/sqrt(3) = 1.15: held
    mixed_cell(root, "cal_ql", "hopper-medium-replay-100k", "o2o",
               {0: [5.0, 30.0], 1: [15.0, 32.0], 2: [0.0, 34.0]}, 0.5, "o2o",
               offline={0: [10.0, 20.0], 1: [10.0, 20.0], 2: [10.0, 20.0]})
    # iql: gains +30, -5, -5 -> mean +6.7, SE 35/3 = 11.7: within noise (2 of 3 lost)
    mixed_cell(root, "iql", "hopper-medium-replay-100k", "o2o",
               {0: [40.0, 50.0], 1: [10.0, 15.0], 2: [10.0, 15.0]}, 0.5, "o2o",
               offline={0: [20.0, 20.0], 1: [20.0, 20.0], 2: [0.0, 20.0]})
    # awac: gains -10, -12, -14 -> NOT held
    mixed_cell(root, "awac", "hopper-medium-replay-100k", "o2o",
               {0: [5.0, 10.0], 1: [5.0, 8.0], 2: [5.0, 6.0]}, 0.5, "o2o",
               offline={0: [20.0, 20.0], 1: [20.0, 20.0], 2: [20.0, 20.0]})
    mixed_cell(root, "bc", "hopper-medium-replay-100k", "o2o", {0: [99.0]}, 0.5, "other",
               offline={0: [1.0]})  # another sweep's cell: never read
    out = tmp_path / "o2o" / "check.md"
    verdicts = mixed.write_o2o(root, ["o2o"], out, "tiny").set_index("algorithm")
    assert list(verdicts.index) == ["awac", "cal_ql", "iql"]
    assert verdicts.loc["cal_ql", "pretrain"] == 20.0
    assert verdicts.loc["cal_ql", "final"] == 32.0
    assert verdicts.loc["cal_ql", "gain"] == pytest.approx(12.0)
    assert verdicts.loc["cal_ql", "gain SE"] == pytest.approx(2.0 / np.sqrt(3))
    assert verdicts.loc["cal_ql", "dip"] == pytest.approx(20.0 / 3)  # first online: 5, 15, 0
    assert verdicts.loc["cal_ql", "seeds_gained"] == "3/3"
    assert verdicts.loc["cal_ql", "verdict"] == "held"
    # last-3 means (here all evaluations): offline 15 each; online 17.5, 23.5, 17 -> 4.33
    assert verdicts.loc["cal_ql", "gain_last3"] == pytest.approx(13.0 / 3)
    assert verdicts.loc["iql", "seeds_gained"] == "1/3"
    assert verdicts.loc["iql", "gain SE"] == pytest.approx(35.0 / 3)
    assert verdicts.loc["iql", "verdict"] == "within noise"
    assert verdicts.loc["awac", "verdict"] == "NOT held"
    per_seed = pd.read_csv(out.with_suffix(".csv"))
    assert len(per_seed) == 9 and set(per_seed.algorithm) == {"awac", "cal_ql", "iql"}
    assert sorted(per_seed[per_seed.algorithm == "cal_ql"].gain) == [10.0, 12.0, 14.0]
    text = out.read_text()
    assert "- **held**: cal_ql on hopper-medium-replay-100k: pre-train 20.0 -> final 32.0 " \
           "(gain +12.0, 2 SE 2.3, 3/3 seeds gained)" in text
    assert "offbench sweep o2o" in text and "99.0" not in text
    assert (out.parent / "curve_o2o_hopper-medium-replay-100k.png").stat().st_size > 1000


def test_a_title_heads_the_o2o_and_hybrid_reports(tmp_path, medium_40):
    # a spec's [[report]] title (or the CLI's --title) reaches the Markdown of both kinds
    # (default: "O2O learning check", "Hybrid learning check"); a misspelt field is refused
    # before anything is written
    from offbench.reports import declared

    root = tmp_path / "store"
    mixed_cell(root, "iql", "hopper-medium-replay-100k", "o2o", {0: [5.0, 9.0]}, 0.5, "o2o",
               offline={0: [10.0, 20.0]})
    for ratio in (0.5, 0.0):
        mixed_cell(root, "rlpd", "hopper-medium-replay-100k", "hybrid", {0: [5.0, 50.0]}, ratio,
                   "o2o", variant=f"offline_ratio={ratio}")
    spec = {"name": "o2o", "report": [
        {"kind": "o2o", "out": str(tmp_path / "o.md"), "budget": "tiny", "title": "Nav O2O"},
        {"kind": "hybrid", "out": str(tmp_path / "h.md"), "budget": "tiny", "title": "Nav hyb"},
        {"kind": "o2o", "out": str(tmp_path / "d.md"), "budget": "tiny"}]}
    declared.write(declared.parse(spec), root, log=lambda *_: None)
    assert (tmp_path / "o.md").read_text().startswith("# Nav O2O\n")
    assert (tmp_path / "h.md").read_text().startswith("# Nav hyb\n")
    assert (tmp_path / "d.md").read_text().startswith("# O2O learning check\n")
    # the CLI's report-o2o / report-hybrid: --title, else the same default headings
    assert cli.main(["report-o2o", "--sweep", "o2o", "--store", str(root), "--out",
                     str(tmp_path / "c.md"), "--title", "By hand"]) == 0
    assert (tmp_path / "c.md").read_text().startswith("# By hand\n")
    assert cli.main(["report-hybrid", "--sweep", "o2o", "--store", str(root), "--out",
                     str(tmp_path / "c2.md")]) == 0
    assert (tmp_path / "c2.md").read_text().startswith("# Hybrid learning check\n")
    spec["report"][0]["titel"] = "x"
    with pytest.raises(ValueError, match="titel: not a field"):
        declared.parse(spec)


def test_o2o_verdict_of_one_seed_is_within_noise(tmp_path):
    root = tmp_path / "store"
    mixed_cell(root, "iql", "hopper-medium-replay-100k", "o2o", {0: [5.0, 90.0]}, 0.5, "o2o",
               offline={0: [10.0, 20.0]})
    verdicts = mixed.write_o2o(root, ["o2o"], tmp_path / "c.md", "tiny")
    assert verdicts.verdict.tolist() == ["within noise"] and np.isnan(verdicts["gain SE"][0])


def test_hybrid_steps_to_threshold_and_verdicts_by_hand(tmp_path, medium_40):
    root = tmp_path / "store"
    data = "hopper-medium-replay-100k"
    # threshold 40 (medium level). With data: reached at 200, 100, never -> median 200.
    mixed_cell(root, "rlpd", data, "hybrid", {0: [10.0, 45.0, 50.0], 1: [40.0, 30.0, 60.0],
                                              2: [0.0, 10.0, 20.0]}, 0.5, "hyb",
               variant="offline_ratio=0.5")
    # without: reached at 300, never, never -> median inf (not reached)
    mixed_cell(root, "rlpd", data, "hybrid", {0: [0.0, 5.0, 41.0], 1: [0.0, 5.0, 10.0],
                                              2: [0.0, 5.0, 10.0]}, 0.0, "hyb",
               variant="offline_ratio=0.0")
    # sim-to-real: h2o (real data) finals 30, 30 vs sim-only 40, 30: difference -5 with
    # SE sqrt(0 / 2 + 50 / 2) = 5, so within noise (|-5| < 2 SE)
    mixed_cell(root, "h2o", SIM, "hybrid", {0: [20.0, 30.0], 1: [10.0, 30.0]}, 0.5, "sim")
    mixed_cell(root, "rlpd", SIM, "hybrid", {0: [50.0, 40.0], 1: [10.0, 30.0]}, 0.0, "sim")
    out = tmp_path / "hybrid" / "check.md"
    result = mixed.write_hybrid(root, ["hyb", "sim"], out, "tiny")
    per_seed = result["per_seed"].set_index(["algorithm", "seed"])
    with_data = per_seed.loc["rlpd[offline_ratio=0.5]"]
    assert with_data.steps_to_threshold.tolist()[:2] == [200.0, 100.0]
    assert np.isnan(with_data.steps_to_threshold.iloc[2])
    assert with_data.mean_online_score.tolist() == [35.0, pytest.approx(130.0 / 3), 10.0]
    (row,) = result["data"].to_dict("records")
    assert row["threshold"] == 40.0 and row["median steps with"] == 200.0
    assert np.isinf(row["median steps without"]) and row["reached without"] == "1/3"
    # censored (never reached: one evaluation after the 300-step budget, 400): with data 200,
    # 100, 400 (mean 233.3); without 300, 400, 400 (mean 366.7); SE of the difference
    # sqrt(var(with) / 3 + var(without) / 3) = sqrt(23333.3 / 3 + 3333.3 / 3) = 94.3
    assert row["mean steps with"] == pytest.approx(700.0 / 3)
    assert row["mean steps without"] == pytest.approx(1100.0 / 3)
    assert row["difference SE"] == pytest.approx(np.sqrt((70000.0 / 3 + 10000.0 / 3) / 3))
    assert row["verdict"] == "within noise"  # 133.3 < 2 SE = 188.6
    assert row["mean score with"] == pytest.approx((35.0 + 130.0 / 3 + 10.0) / 3)
    assert row["mean score without"] == pytest.approx((46.0 / 3 + 5.0 + 5.0) / 3)
    (sim,) = result["sim"].to_dict("records")
    assert (sim["with real data"], sim["sim only"]) == ("h2o", "rlpd")
    assert sim["final with"] == 30.0 and sim["final sim only"] == 35.0
    assert sim["difference SE"] == pytest.approx(5.0) and sim["verdict"] == "within noise"
    text = out.read_text()
    assert "mean steps 233.3 vs 366.7 (2 SE 188.6), median 200 vs not reached" in text
    assert ("- **within noise**: h2o vs rlpd (`hidden=8,8`) on " + SIM
            + ": final 30.0 vs 35.0") in text
    assert len(pd.read_csv(out.with_suffix(".csv"))) == 10


def test_hybrid_undecided_when_neither_reaches_and_unfinished_sweeps_refused(tmp_path, medium_40,
                                                                            capsys):
    root = tmp_path / "store"
    data = "hopper-medium-replay-100k"
    mixed_cell(root, "rlpd", data, "hybrid", {0: [1.0], 1: [2.0]}, 0.5, "hyb", variant="a")
    mixed_cell(root, "rlpd", data, "hybrid", {0: [3.0], 1: [4.0]}, 0.0, "hyb", variant="b")
    data_table = mixed.write_hybrid(root, ["hyb"], tmp_path / "h.md", "tiny")["data"]
    assert data_table.verdict.tolist() == ["undecided"]
    # a threshold given by hand replaces the medium level: 3 is reached by both seeds without
    # data at the one evaluation (100 steps), never with it (200: one evaluation after the
    # budget), and the seeds agree (SE 0)
    again = mixed.write_hybrid(root, ["hyb"], tmp_path / "h2.md", "tiny", {data: 3.0})["data"]
    assert again.verdict.tolist() == ["NOT held"]
    assert again["mean steps with"][0] == 200.0 and again["mean steps without"][0] == 100.0
    mixed_cell(root, "rlpd", data, "hybrid", {0: [5.0]}, 0.0, "hyb", variant="c",
               complete=False)
    assert cli.main(["report-hybrid", "--sweep", "hyb", "--store", str(root),
                     "--out", str(tmp_path / "x.md")]) == 2
    assert "have not finished" in capsys.readouterr().err
    assert cli.main(["report-o2o", "--sweep", "nope", "--store", str(root),
                     "--out", str(tmp_path / "y.md")]) == 2
    assert "no cell of sweep(s) ['nope']" in capsys.readouterr().err
