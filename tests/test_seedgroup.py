"""--seed-group auto (offbench/harness/seedgroup.py): on CPU the fastest grouping of the
committed perf tables, all seeds at once elsewhere; it never loses to one seed after another."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from test_offline import DATASET, TINY_FLAGS, run_cli

from offbench.harness import seedgroup


@pytest.fixture
def tables(tmp_path):
    one = tmp_path / "offline.csv"
    pd.DataFrame({"algorithm": ["slow", "slow", "fast", "fast"], "seeds": [1, 8, 1, 8],
                  "updates_per_s": [10.0, 8.0, 10.0, 30.0]}).to_csv(one, index=False)
    groups = tmp_path / "groups.csv"
    pd.DataFrame({"algorithm": ["slow", "slow"], "seeds": [8, 8], "seed_group": [2, 4],
                  "updates_per_s": [12.0, 11.0]}).to_csv(groups, index=False)
    return one, groups


def test_auto_picks_the_highest_measured_total_rate(tables):
    assert seedgroup.measured_rates("slow", tables) == {1: 10.0, None: 8.0, 2: 12.0, 4: 11.0}
    assert seedgroup.choose("auto", "slow", 8, "cpu", tables)[0] == 2
    assert seedgroup.choose("auto", "slow", 4, "cpu", tables)[0] == 2  # 4 >= seeds: all at once
    assert seedgroup.choose("auto", "slow", 3, "cpu", tables)[0] == 1  # 2 does not divide 3
    assert seedgroup.choose("auto", "fast", 8, "cpu", tables)[0] is None
    assert seedgroup.choose("auto", "unknown", 8, "cpu", tables)[0] is None
    assert seedgroup.choose("auto", "slow", 8, "gpu", tables)[0] is None
    assert seedgroup.choose(3, "slow", 8, "cpu", tables) == (3, "given")


def test_online_table_rows_count_at_one_update_per_env_step(tmp_path):
    online = tmp_path / "o2o.csv"
    pd.DataFrame({"algorithm": ["rlpd"] * 4, "utd": [1, 1, 20, 20], "seeds": [1, 4, 1, 4],
                  "updates_per_s": [43.0, 41.0, 50.0, 60.0]}).to_csv(online, index=False)
    assert seedgroup.measured_rates("rlpd", (online,)) == {1: 43.0, None: 41.0}
    assert seedgroup.choose("auto", "rlpd", 3, "cpu", (online,))[0] == 1


@pytest.mark.parametrize("seeds", [2, 3, 8])
def test_the_committed_tables_never_lose_to_one_seed_after_another(seeds):
    algorithms = {a for path in seedgroup.TABLES for a in pd.read_csv(path).algorithm}
    assert len(algorithms) >= 8 and {"rlpd", "mopo", "mobile", "dt"} <= algorithms
    for algorithm in algorithms:
        rates = seedgroup.measured_rates(algorithm)
        group, _ = seedgroup.choose("auto", algorithm, seeds, "cpu")
        assert rates[group] >= rates[1], (algorithm, group, rates)


def test_run_with_auto_records_the_chosen_group(minari_root, tmp_path):
    # CQL on 2 CPU cores: one seed after another beats both vmapped (results/perf tables)
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    out = run_cli("run", "cql", DATASET, "--seeds", "2", "--seed-group", "auto", *TINY_FLAGS,
                  "--set", "hidden=16,16", "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr
    assert "--seed-group auto: seed group 1 (results/perf" in out.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seed_group"] == 1
