"""The robustness report (offbench/reports/robustness.py) on hand-made runs: scores, drops,
the area under the score-vs-rate curve and the pairwise verdicts equal hand-computed values,
and the report is declared in a sweep spec as `kind = "robustness"`."""

import json

import numpy as np
import pandas as pd
import pytest

from offbench.reports import declared, robustness

CLEAN = "hopper-medium-replay-100k"
OBS = {0.1: CLEAN + "+corrupt=obs:random:0.1:1.0", 0.3: CLEAN + "+corrupt=obs:random:0.3:1.0"}
REW = CLEAN + "+corrupt=rew:random:0.3:2.0"
# per (algorithm, dataset): the last score of seeds 0, 1, 2
SCORES = {("iql", CLEAN): [60.0, 60.0, 60.0], ("iql", OBS[0.1]): [40.0, 40.0, 40.0],
          ("iql", OBS[0.3]): [10.0, 10.0, 10.0], ("iql", REW): [30.0, 40.0, 50.0],
          ("riql", CLEAN): [50.0, 50.0, 50.0], ("riql", OBS[0.1]): [45.0, 45.0, 45.0],
          ("riql", OBS[0.3]): [35.0, 35.0, 35.0], ("riql", REW): [10.0, 10.0, 10.0]}


def write_runs(tmp_path):
    runs = []
    for i, ((algo, dataset), scores) in enumerate(SCORES.items()):
        run = tmp_path / f"run{i}"
        run.mkdir()
        pd.DataFrame([{"seed": s, "period": 0, "updates": 100, "normalized_score": v}
                      for s, v in enumerate(scores)]).to_csv(run / "metrics.csv", index=False)
        (run / "run.json").write_text(json.dumps({
            "algorithm": algo, "dataset": dataset, "task": "hopper", "command": "run",
            "offline_config": {"updates": 100, "eval_episodes": 5},
            "per_seed": {str(s): {"last_score": v, "best_score": v, "diverged": False}
                         for s, v in enumerate(scores)}}))
        runs.append(run)
    return runs


def test_condition_splits_a_dataset_id_into_clean_data_corruption_and_rate():
    assert robustness.condition(CLEAN) == (CLEAN, "clean", 0.0)
    assert robustness.condition(OBS[0.3]) == (CLEAN, "obs:random, eps 1", 0.3)
    mixed = "halfcheetah-random-100k+mix=expert:0.05+corrupt=act:random:0.2:0.5+seed=2"
    assert robustness.condition(mixed) == ("halfcheetah-random-100k+mix=expert:0.05+seed=2",
                                           "act:random, eps 0.5", 0.2)


def test_robustness_report_numbers_by_hand(tmp_path):
    out = tmp_path / "robust.md"
    scores, areas, comparisons = robustness.write_report(write_runs(tmp_path), out, "tiny",
                                                         reps=500)
    rows = scores.set_index(["algorithm", "condition", "rate"])
    assert rows.loc[("iql", "clean", 0.0), "score"] == 60.0
    assert np.isnan(rows.loc[("iql", "clean", 0.0), "drop"])
    assert rows.loc[("iql", "obs:random, eps 1", 0.3), "drop"] == pytest.approx(50.0)
    assert rows.loc[("riql", "obs:random, eps 1", 0.1), "drop"] == pytest.approx(5.0)
    # iql on reward corruption: seeds 30, 40, 50 -> mean 40, drop 20; a bootstrap CI of a mean
    # of three lies within the seeds' range and holds the point
    rew = rows.loc[("iql", "rew:random, eps 2", 0.3)]
    assert rew.score == pytest.approx(40.0) and rew["drop"] == pytest.approx(20.0)
    assert 30.0 <= rew.score_low < 40.0 < rew.score_high <= 50.0
    assert 10.0 <= rew.drop_low < 20.0 < rew.drop_high <= 30.0
    # AUC over rates 0, 0.1, 0.3, divided by 0.3: iql ((60+40)/2 * 0.1 + (40+10)/2 * 0.2) / 0.3
    # = 33.33; riql ((50+45)/2 * 0.1 + (45+35)/2 * 0.2) / 0.3 = 42.5; seeds agree: CI = point
    by_algo = areas.set_index("algorithm")
    assert list(areas.condition) == ["obs:random, eps 1"] * 2  # reward: one rate, no AUC
    assert by_algo.loc["iql", "auc"] == pytest.approx(100 / 3)
    assert by_algo.loc["riql", "auc"] == pytest.approx(42.5)
    assert by_algo.loc["riql", "auc_low"] == pytest.approx(42.5)
    assert by_algo.loc["iql", "rates"] == "0, 0.1, 0.3"
    # riql drops less than iql: obs 0.3: 50 - 15 = 35 (held); reward: 20 - 40 = -20, and with
    # iql's seeds 30..50 every resampled difference lies in [-30, -10] -> NOT held
    verdicts = comparisons.set_index(["condition", "rate"])
    obs = verdicts.loc[("obs:random, eps 1", 0.3)]
    assert (obs.x, obs.y, obs.difference, obs.verdict) == ("riql", "iql", 35.0, "held")
    reward = verdicts.loc[("rew:random, eps 2", 0.3)]
    assert reward.difference == pytest.approx(-20.0) and reward.verdict == "NOT held"
    assert -30.0 <= reward.low < -20.0 < reward.high <= -10.0
    text = out.read_text()
    table = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| hopper")]
    assert [CLEAN, "iql", "obs:random, eps 1", "0.3", "3", "10.0 [10.0, 10.0]",
            "50.0 [50.0, 50.0]"] in table
    assert [CLEAN, "riql", "obs:random, eps 1", "0, 0.1, 0.3", "42.5 [42.5, 42.5]"] in table
    assert ("- held: riql drops less than iql on hopper-medium-replay-100k under "
            "obs:random, eps 1 at rate 0.3 (drop(iql) - drop(riql) = 35.0 [35.0, 35.0])") in text
    assert (tmp_path / "robust_hopper-medium-replay-100k.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "robust.csv")) == len(SCORES)


def test_the_report_is_a_kind_of_declared_report():
    spec = {"name": "r", "report": [{"kind": "robustness", "out": "x.md", "budget": "b",
                                     "title": "T", "datasets": [CLEAN]}]}
    (report,) = declared.parse(spec)
    assert report["sweeps"] == ["r"]
    with pytest.raises(ValueError, match=r"report\[0\].budget: missing"):
        declared.parse({"name": "r", "report": [{"kind": "robustness", "out": "x.md"}]})
    with pytest.raises(ValueError, match=r"report\[0\].samples: not a field of a 'robustness'"):
        declared.parse({"name": "r", "report": [{"kind": "robustness", "out": "x.md",
                                                 "budget": "b", "samples": 3}]})
