"""The online-run report: numbers in its table come from the metrics, computed by hand here."""

import json

import numpy as np
import pandas as pd
import pytest

from offbench.reports import online as report


def test_online_report_table_matches_hand_computed_values(tmp_path):
    run = tmp_path / "sac-hopper"
    run.mkdir()
    rows = [{"seed": s, "period": p, "env_steps": 100_000 * (p + 1), "eval_return": r}
            for s, returns in ((0, [100.0, 900.0, 700.0]), (1, [200.0, 300.0, 1100.0]))
            for p, r in enumerate(returns)]
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({"task": "hopper", "algorithm": "sac",
                                              "command": "offbench train-online sac hopper",
                                              "wall_s": 3600.0}))
    out = tmp_path / "sac.md"
    report.write_report([run], out, "check")
    text = out.read_text()
    # final (300k): 700 and 1100 -> mean 900, population std 200; best per seed 900 and 1100
    row = next(line for line in text.splitlines() if line.startswith("| hopper"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["hopper", "2", "300000"]
    assert cells[3] == "900 ± 200" and cells[4] == "1000" and cells[5] == "900"
    assert cells[6] == "> 2500" and cells[7] == "complete"
    assert "offbench train-online sac hopper" in text
    assert (tmp_path / "sac-hopper.png").stat().st_size > 1000


def test_offline_check_table_and_orderings_by_hand(tmp_path, monkeypatch):
    from offbench import policies
    from offbench.reports import offline as offline_report

    monkeypatch.setattr(policies, "manifest",
                        lambda task: {"policies": {"medium": {"normalized": 40.0}}})
    runs = []
    scores = {("bc", "hopper-medium-replay"): [(30.0, 35.0), (20.0, 25.0)],
              ("iql", "hopper-medium-replay"): [(60.0, 70.0), (50.0, 80.0)],
              ("bc", "hopper-medium-expert"): [(48.0, 50.0), (52.0, 60.0)],
              ("iql", "hopper-medium-expert"): [(30.0, 90.0), (34.0, 95.0)],
              ("td3_bc", "hopper-medium-expert"): [(30.0, 90.0), (60.0, 95.0)]}
    for (algo, dataset), per_seed in scores.items():
        run = tmp_path / f"{algo}-{dataset}"
        run.mkdir()
        rows = [{"seed": s, "period": 0, "updates": 100, "normalized_score": last}
                for s, (last, _) in enumerate(per_seed)]
        if algo == "iql":  # a critic whose mean Q goes 40, 50 -> 60, 90 over two evaluations
            rows = [{**row, "q_mean": q} for row, q in zip(rows, (40.0, 50.0), strict=True)]
            rows += [{**row, "period": 1, "updates": 200, "q_mean": q}
                     for row, q in zip(rows, (60.0, 90.0), strict=True)]
        pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
        info = {"algorithm": algo, "dataset": dataset, "task": "hopper", "command": f"run {algo}",
                "offline_config": {"updates": 100, "eval_episodes": 10},
                "per_seed": {str(s): {"last_score": last, "best_score": best,
                                      "diverged": False} for s, (last, best) in
                             enumerate(per_seed)}}
        (run / "run.json").write_text(json.dumps(info))
        runs.append(run)
    table = offline_report.write_report(runs, tmp_path / "check.md", "tiny").set_index(
        ["dataset", "algorithm"])
    # bc on medium-replay: last 30, 20 -> mean 25, population std 5; best 35, 25 -> 30
    assert table.loc[("hopper-medium-replay", "bc"), "last"] == 25.0
    assert table.loc[("hopper-medium-replay", "bc"), "last_std"] == 5.0
    assert table.loc[("hopper-medium-replay", "bc"), "best"] == 30.0
    text = (tmp_path / "check.md").read_text()
    # margins: twice the standard error, std (ddof 0) / sqrt(seeds - 1) per mean
    # iql - bc on medium-replay: 55 - 25 = 30 > 2 * hypot(5, 5) = 14.1
    assert ("- held: iql beats bc on hopper-medium-replay (55.0 vs 25.0; difference +30.0, "
            "2 SE 14.1)") in text
    # medium level 40: bc 50 (2 SE 4) above it; iql 32 (2 SE 4) below it; td3_bc 45 (2 SE 30)
    # neither
    assert "- held: bc scores above medium level on hopper-medium-expert (50.0 vs" in text
    assert "- NOT held: iql scores above medium level on hopper-medium-expert (32.0 vs" in text
    assert ("- within noise: td3_bc scores above medium level on hopper-medium-expert (45.0 vs "
            "medium policy 40.0; 2 SE 30.0)") in text
    assert offline_report.verdict(50.0, float("nan")) == "within noise"  # one seed cannot tell
    assert offline_report.margin_text(float("nan")) == "one seed: no margin"
    # seed means 45 -> 75: +67% over the last period; bc logs no q_mean
    assert table.loc[("hopper-medium-replay", "iql"), "q_growth"] == pytest.approx(30 / 45)
    assert np.isnan(table.loc[("hopper-medium-replay", "bc"), "q_growth"])
    assert "| +67%" in text
    # a second report in the same folder keeps its own plots and has its own title
    offline_report.write_report(runs, tmp_path / "diagnosis.md", "tiny", title="Why")
    for stem in ("check", "diagnosis"):
        assert (tmp_path / f"{stem}_hopper-medium-replay.png").stat().st_size > 1000
    assert (tmp_path / "diagnosis.md").read_text().startswith("# Why\n")
    assert text.startswith("# Offline learning check\n")
    assert "## Expected orderings" in text
    # runs on which no ordering is defined (IQL alone): no empty orderings section
    offline_report.write_report([runs[1]], tmp_path / "alone.md", "tiny")
    assert "## Expected orderings" not in (tmp_path / "alone.md").read_text()


def write_datasets_report(tmp_path, monkeypatch, manifest, tasks) -> str:
    """results/datasets.md's text for `tasks` (one expert row each, placeholder statistics),
    with `manifest(task)` standing in for the committed policies.json."""
    from offbench import policies
    from offbench.reports import datasets as datasets_report

    monkeypatch.setattr(policies, "manifest", manifest)
    monkeypatch.setattr(policies, "reference_table", lambda: pd.DataFrame({"task": []}))
    columns = ["transitions", "episodes", "whole_episodes", "return_mean", "return_min",
               "return_max", "normalized", "tq", "saco", "ref_min", "ref_max", "sha256"]
    df = pd.DataFrame([{"task": task, "kind": "expert", **dict.fromkeys(columns, 1)}
                       for task in tasks])
    out = tmp_path / "datasets.md"
    datasets_report.write_report(df, out, "offbench datasets report", 1000)
    return out.read_text()


def test_datasets_report_says_whether_each_expert_reaches_published_sac(tmp_path, monkeypatch):
    experts = {"halfcheetah": 8999.5, "hopper": 3000.0}  # just short of 9000; exactly 3000

    def manifest(task):
        return {"policies": {"expert": {"return_mean": experts[task]}},
                "training_run": {"trained_env_steps": 1_000_000,
                                 "target_env_steps": 1_000_000}}
    text = write_datasets_report(tmp_path, monkeypatch, manifest, experts)
    lines = text.splitlines()
    cheetah = next(line for line in lines if line.startswith("- halfcheetah: SAC"))
    hopper = next(line for line in lines if line.startswith("- hopper: SAC"))
    assert "expert return 8999.5, SHORT of published SAC at 1M env steps (>= 9000)" in cheetah
    assert "expert return 3000.0, at or above published SAC" in hopper
    assert "PROVISIONAL" not in text  # both runs reached their planned length


@pytest.mark.parametrize("stopped_early, provisional", [(None, True),
                                                        ({"reason": "plateaued"}, False)])
def test_datasets_report_is_provisional_only_for_runs_still_unfinished(
        tmp_path, monkeypatch, stopped_early, provisional):
    # a run short of its planned length makes the report provisional, unless its manifest
    # records that it was stopped there on purpose (and why: the reason is printed)
    def manifest(task):
        run = {"trained_env_steps": 400_000, "target_env_steps": 1_000_000}
        if stopped_early:
            run["stopped_early"] = stopped_early
        return {"policies": {"expert": {"return_mean": 3200.0}, "medium": {"normalized": 44.9}},
                "training_run": run}
    text = write_datasets_report(tmp_path, monkeypatch, manifest, ["hopper"])
    assert ("**PROVISIONAL**: the behaviour policies of hopper" in text) == provisional
    line = next(x for x in text.splitlines() if x.startswith("- hopper: SAC"))
    assert "400,000 of 1,000,000 planned env steps" in line
    assert ("stopped there on purpose: plateaued" in line) == (not provisional)
    assert "medium 44.9 normalized (goal 33.3: the nearest snapshot)" in line


def test_offline_report_never_pools_different_runs_under_one_name(tmp_path):
    """Two runs of one algorithm on one dataset that differ in settings or budget get names
    that say how (else their seeds would be averaged as one run's); one run given twice is an
    error, not six seeds."""
    from offbench.reports import offline as offline_report

    narrow = frozenset({"hidden=64,64"})
    labels = offline_report.distinct_labels([
        ("sac_n", "hc", narrow, 20_000), ("sac_n", "hc", narrow, 40_000),
        ("sac_n", "hc", frozenset(), 40_000), ("bc", "hc", narrow, 20_000),
        ("sac_n", "walker", narrow, 20_000)])
    assert labels == ["sac_n[hidden=64,64] (20k updates)", "sac_n[hidden=64,64] (40k updates)",
                      "sac_n (40k updates)", "bc", "sac_n"]
    # the same settings and budget: nothing to tell them apart, and nothing added
    assert offline_report.distinct_labels([("bc", "hc", narrow, 10), ("bc", "hc", narrow, 10)]
                                          ) == ["bc", "bc"]
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([{"seed": 0, "period": 0, "updates": 10, "normalized_score": 1.0}]).to_csv(
        run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({
        "algorithm": "bc", "dataset": "hc", "offline_config": {"updates": 10, "eval_episodes": 1},
        "per_seed": {"0": {"last_score": 1.0, "best_score": 1.0, "diverged": False}}}))
    with pytest.raises(ValueError, match="seed 0 of bc on hc comes from more than one"):
        offline_report.load_runs([run, run])


def test_an_algorithm_keeps_its_colour_whatever_is_plotted_beside_it():
    from offbench.reports import plots

    baselines = [plots.algorithm_color(a) for a in plots.KNOWN]
    assert len(set(baselines)) == len(baselines)  # the baselines are told apart
    assert plots.algorithm_color("iql") == plots.algorithm_color("iql")
    # a submission's colour depends on its name only (a hash), not on its rank among others
    assert plots.algorithm_color("mine") == plots.algorithm_color("mine")
    assert plots.algorithm_color("iql[beta=3]") != plots.algorithm_color("iql")


def test_aggregate_plots_say_which_score_and_profile_they_show(tmp_path, monkeypatch):
    # a PNG is also seen alone: each aggregate plot names the profile, the mode and that its
    # score is the last one (the final policy), not the best periodic evaluation
    from offbench.reports import leaderboard, plots

    figures = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.update({path.name: fig}))
    rng = np.random.default_rng(0)
    matrices = {"bc": rng.uniform(0, 50, (3, 2)), "iql": rng.uniform(20, 80, (3, 2))}
    agg = leaderboard.aggregate(matrices, reps=50)
    names = leaderboard.plot_aggregates(agg, matrices, tmp_path, "aggregate_offline",
                                        "profile cpu, offline: last score (the final policy)")
    assert sorted(names) == sorted(figures)
    for fig in figures.values():
        texts = [t.get_text() for t in fig.texts] + [ax.get_title() for ax in fig.axes]
        assert any("profile cpu, offline: last score" in t for t in texts), texts
    (ax,) = figures["aggregate_offline_profiles.png"].axes
    assert ax.get_legend().get_texts()[0].get_fontsize() >= 9
