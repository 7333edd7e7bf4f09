"""The harness: store hashing, atomic writes under a kill, sweeps (resume, a crashing cell, a
kill between cells), logging sinks, the leaderboard against hand computations, profiles kept
apart, and `offbench check` on a good baseline and on deliberately broken modules.

Training here is tiny (2 seeds of 200 updates of 2x32 networks on a 2000-step random dataset,
20-step evaluation episodes); every other test builds its store by hand."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from offbench import io
from offbench.data import builder
from offbench.harness import cells, store, sweep
from offbench.reports import declared, leaderboard

from conftest import run_cli_killed

DATASET = "test/hopper/random-v0"
BUDGET = {"updates": 200, "eval_every": 100, "eval_episodes": 2, "checkpoint_every": 100,
          "episode_length": 20, "backend": "mujoco"}
REPO = Path(__file__).resolve().parents[1]

# A tiny, correct algorithm module (linear tanh policy fitted by MSE); the broken modules below
# are this text with one deliberate fault each, so any failure is the fault's.
GOOD_MODULE = textwrap.dedent('''
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import struct

    MODES = ("offline",)


    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = 1e-2
        batch_size: int = 32


    class State(struct.PyTreeNode):
        w: jax.Array
        opt: optax.OptState
        config: Config = struct.field(pytree_node=False)


    def init(key, spec, config=None, dataset=None):
        config = config or Config()
        w = 0.1 * jax.random.normal(key, (spec.observation_size, spec.action_size))
        return State(w, optax.adam(config.lr).init(w), config)


    def act(state, obs, key, deterministic):
        return jnp.tanh(obs @ state.w)


    def update(state, batch, key):
        def loss_fn(w):
            return jnp.mean((jnp.tanh(batch.obs @ w) - batch.action) ** 2)
        loss, grad = jax.value_and_grad(loss_fn)(state.w)
        upd, opt = optax.adam(state.config.lr).update(grad, state.opt)
        w = state.w + upd
        return state.replace(w=w, opt=opt), {"loss": loss}
''')

BROKEN = {  # name -> (replace this, with that), and the words its FAIL line must contain
    "no_config": (("Config", "Settings"), "does not define Config"),
    "no_update": (("def update(state, batch, key):", "def learn(state, batch, key):"),
                  "does not define update"),
    "wrong_action_shape": (("return jnp.tanh(obs @ state.w)",
                            "return jnp.tanh(obs @ state.w)[:, :2]"), "expected (7, 3)"),
    "nan_loss": (('{"loss": loss}', '{"loss": loss * jnp.nan}'),
                 "metric 'loss' is nan after update 1 on a tiny random dataset; the loops take"),
    # declared as skipped on some updates, a metric still must be computed on one of them
    "nan_loss_declared_skipped": (('{"loss": loss}', '{"loss": loss * jnp.nan}\n\n\n'
                                   'SKIPS_METRICS = True'), "nan after every one of 3 updates"),
    "non_deterministic": (("w = state.w + upd", "w = state.w + upd + np.random.normal()"),
                          "two runs with the same keys gave different numbers"),
    "not_jittable": (("w = state.w + upd", "w = state.w + upd if loss > 0 else state.w"),
                     "update under jit: 3 updates keep the state's shapes, metrics finite "
                     "scalars: not jittable"),
    "state_changes_shape": (("w = state.w + upd", "w = jnp.concatenate([state.w + upd] * 2)"),
                            "update changed"),
}


def module_text(fault: str | None = None) -> str:
    if fault is None:
        return GOOD_MODULE
    (old, new), _ = BROKEN[fault]
    assert old in GOOD_MODULE
    return GOOD_MODULE.replace(old, new)


@pytest.fixture(scope="module")
def env_root(tmp_path_factory):
    """A tiny Minari dataset and an importable package `harnesspkg` holding a good module and a
    crashing one (its update raises while being traced)."""
    root = tmp_path_factory.mktemp("harness")
    episodes, _ = builder.generate("hopper", "random", 2000, seed=0, log=lambda *_: None)
    builder.write_minari(root / "minari", DATASET, episodes, "hopper",
                         {"ref_min_score": -20.0, "ref_max_score": 3000.0})
    package = root / "code" / "harnesspkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(GOOD_MODULE)
    (package / "crash.py").write_text(GOOD_MODULE.replace(
        "    loss, grad =", "    raise ValueError('boom: a deliberate crash')\n    loss, grad ="))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        mp.syspath_prepend(str(root / "code"))
        yield root


def tiny_spec(**changes) -> dict:
    spec = {"name": "tiny", "profile": "test", "algorithms": ["bc", "harnesspkg.crash"],
            "datasets": [DATASET], "seeds": 2, "set": ["hidden=32,32", "batch_size=64"],
            "budget": dict(BUDGET), "sinks": ["tensorboard"]}
    spec.update(changes)
    return spec


def quiet(*_):
    pass


# ---- store hashing ------------------------------------------------------------------------

def names(spec: dict) -> list[str]:
    return [store.cell_name(c.config) for c in sweep.expand(spec, quiet)]


def test_same_config_same_folder_and_any_change_another(env_root):
    base = names(tiny_spec(algorithms=["bc"]))
    assert len(base) == 1
    # the spec's name and the logging sinks do not change the numbers: same folder
    assert names(tiny_spec(algorithms=["bc"], name="other", sinks=[])) == base
    changed = {
        "seeds": tiny_spec(algorithms=["bc"], seeds=3),
        "first seed": tiny_spec(algorithms=["bc"], first_seed=1),
        "profile": tiny_spec(algorithms=["bc"], profile="cpu"),
        "override": tiny_spec(algorithms=["bc"], set=["hidden=32,33", "batch_size=64"]),
        "budget": tiny_spec(algorithms=["bc"], budget={**BUDGET, "updates": 300}),
        "eval episodes": tiny_spec(algorithms=["bc"], budget={**BUDGET, "eval_episodes": 3}),
        "backend": tiny_spec(algorithms=["bc"], budget={**BUDGET, "backend": "mjx"}),
        "algorithm": tiny_spec(algorithms=["td3_bc"]),
        "dataset": tiny_spec(algorithms=["bc"], datasets=["test/hopper/random-v1"]),
        "per-algorithm": tiny_spec(algorithms=["bc"],
                                   algorithms_set={"bc": {"set": ["lr=0.001"]}}),
    }
    seen = set(base)
    for what, spec in changed.items():
        (name,) = names(spec)
        assert name not in seen, f"changing the {what} kept the folder {name}"
        seen.add(name)
    # a grid gives one cell per value, each its own folder
    grid = names(tiny_spec(algorithms=["bc"],
                           algorithms_set={"bc": {"grid": {"lr": ["0.001", "0.002"]}}}))
    assert len(set(grid)) == 2 and not set(grid) & seen


def test_a_rebuilt_dataset_gives_new_cells(env_root, tmp_path, monkeypatch):
    """The cell config holds a hash of an offbench dataset's content record (offbench.json)."""
    monkeypatch.setenv("OFFBENCH_DATASETS", str(tmp_path))
    spec = tiny_spec(algorithms=["bc"], datasets=["hopper-medium-100k"])
    unbuilt = names(spec)
    sidecar = tmp_path / "offbench" / "hopper" / "medium-100k-v0" / "offbench.json"
    sidecar.parent.mkdir(parents=True)
    record = {"sha256": {"data/main_data.hdf5": "aa"}, "reference_scores": {"ref_min": 0.0,
                                                                             "ref_max": 1.0},
              "command": "x"}
    sidecar.write_text(json.dumps(record))
    built = names(spec)
    sidecar.write_text(json.dumps({**record, "command": "y"}))  # provenance only: same cell
    assert names(spec) == built != unbuilt
    # rebuilt byte-identically at another commit: Minari's metadata.json (which records the
    # commit) and the sidecar's git_commit differ, the transitions do not: same cells
    sidecar.write_text(json.dumps({**record, "git_commit": "other", "sha256": {
        **record["sha256"], "data/metadata.json": "cc"}}))
    assert names(spec) == built
    sidecar.write_text(json.dumps({**record, "sha256": {"data/main_data.hdf5": "bb"}}))
    rebuilt = names(spec)
    sidecar.write_text(json.dumps({**record, "reference_scores": {"ref_min": 0.0,
                                                                  "ref_max": 2.0}}))
    new_refs = names(spec)
    assert len({*built, *rebuilt, *new_refs}) == 3


def test_hash_is_of_content_not_key_order():
    a = {"algorithm": "bc", "budget": {"updates": 10, "eval_every": 5}, "seeds": 2}
    b = {"seeds": 2, "budget": {"eval_every": 5, "updates": 10}, "algorithm": "bc"}
    assert store.config_hash(a) == store.config_hash(b)
    c = json.loads(json.dumps(a))
    c["budget"]["updates"] = 11
    assert store.config_hash(a) != store.config_hash(c)
    d = {**a, "algo_config": {"lr": 3e-4}}
    e = {**a, "algo_config": {"lr": 3.0000001e-4}}
    assert store.config_hash(d) != store.config_hash(e)


def test_bad_specs_fail_before_anything_runs(env_root, tmp_path):
    with pytest.raises(ValueError, match="mode 'o2o2' has no runner"):
        sweep.expand(tiny_spec(modes=["o2o2"]), quiet)
    with pytest.raises(ValueError, match="unknown config key 'hiden'"):
        sweep.expand(tiny_spec(algorithms=["bc"], algorithms_set={"bc": {"set": ["hiden=3"]}}),
                     quiet)
    with pytest.raises(ValueError, match="unknown keys"):
        sweep.expand(tiny_spec(colour="red"), quiet)
    with pytest.raises(ValueError, match="matches no algorithm's Config field"):
        sweep.expand(tiny_spec(set=["hiden=32,32"]), quiet)
    with pytest.raises(ValueError, match="unknown offline budget keys"):
        sweep.expand(tiny_spec(budget={**BUDGET, "upd": 3}), quiet)
    logged = []
    cells = sweep.expand(tiny_spec(algorithms=["bc", "sac"]), logged.append)
    assert [c.config["algorithm"] for c in cells] == ["bc"]  # sac has no offline mode
    assert any("sac does not declare mode 'offline'" in m for m in logged)
    assert not (tmp_path / "cells").exists()


def test_bench_profiles(monkeypatch):
    import jax

    from offbench import cli

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert cli.resolve_profile("auto") == "cpu"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cli.resolve_profile("auto") == "gpu" and cli.resolve_profile("cpu") == "cpu"
    assert cli.bench_profiles() == ["cpu", "full", "gpu"]
    cells = {}
    for profile in ("cpu", "gpu", "full"):
        path = cli.SWEEPS_DIR / f"{profile}.toml"
        spec = sweep.load_spec(path)
        assert spec["profile"] == profile
        cells[profile] = [c for s in (spec, *map(sweep.load_spec, declared.needs(spec, path)))
                          for c in sweep.expand(s, quiet)]
        assert {c.config["profile"] for c in cells[profile]} == {profile}
    cpu = cells["cpu"]
    # published networks in every section (no width override), all three sections
    assert all(not any(o.startswith("hidden=") for o in c.config["overrides"]) for c in cpu)
    assert {c.config["mode"] for c in cpu} == {"offline", "o2o", "hybrid"}
    assert {c.config["mode"] for c in cells["gpu"]} == {"offline", "o2o", "hybrid"}
    assert {c.config["mode"] for c in cells["full"]} == {"offline", "o2o", "hybrid"}
    full = [c for c in cells["full"] if c.config["mode"] == "offline"]
    assert len(full) == 11 * 24 and {c.config["seeds"] for c in cells["full"]} == {10}
    assert {c.config["budget"]["updates"] for c in full} == {1_000_000}
    by = {(c.config["algorithm"], c.config["dataset"]): c.config["algo_config"] for c in full}
    assert by[("rebrac", "hopper-medium-replay")]["actor_bc_coef"] == 0.05
    assert by[("rebrac", "hopper-medium-replay")]["critic_bc_coef"] == 0.5
    assert by[("sac_n", "hopper-medium")]["num_critics"] == 500
    assert by[("sac_n", "hopper-medium-expert")]["num_critics"] == 200
    assert by[("edac", "walker2d-medium-expert")]["eta"] == 5.0
    assert by[("iql", "hopper-medium")]["max_steps"] == 1_000_000  # schedule spans the run
    assert by[("td3_bc", "hopper-medium")]["hidden"] == [256, 256]  # published sizes
    assert by[("mobile", "walker2d-medium-replay")]["penalty_coef"] == 0.5


# ---- atomic writes ------------------------------------------------------------------------

KILLED_WRITE = """
import os, sys
from offbench import io
os.fsync = lambda fd: os._exit(9)  # the process dies after writing, before the rename
io.write_text_atomic(sys.argv[1], sys.argv[2])
"""


def killed_write(path: Path, text: str) -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path), text],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 9


def test_a_write_killed_midway_leaves_the_old_file_or_none(tmp_path):
    target = tmp_path / "metrics.csv"
    killed_write(target, "a,b\n1,2\n")
    assert not target.exists()  # a first write that died leaves no file at all
    io.write_text_atomic(target, "a,b\n1,2\n")
    killed_write(target, "a,b\n3,4\n5,6\n")
    assert target.read_text() == "a,b\n1,2\n"  # the old complete file, never half a new one
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(n.startswith(".metrics.csv.") and n.endswith(".tmp")
                             for n in leftovers)


def make_cell(root: Path, algorithm: str, dataset: str, per_seed: dict, profile: str = "cpu",
              updates: int = 100, mode: str = "offline", complete: bool = True,
              dataset_sha256: str | None = None, budget: dict | None = None,
              variant: str = "") -> store.CellDir:
    """A finished cell written by hand: per_seed = {seed: (last, best) or dict}; budget: keys
    added to the budget; variant: its grid label."""
    config = {**({"dataset_sha256": dataset_sha256} if dataset_sha256 else {}),
              "algorithm": algorithm, "module": f"offbench_baselines.{algorithm}",
              "dataset": dataset,
              "mode": mode, "budget": {"updates": updates, "eval_every": 50,
                                       "eval_episodes": 10, "checkpoint_every": 50,
                                       "episode_length": None, "backend": "mujoco",
                                       **(budget or {})},
              "algo_config": {}, "overrides": [], "variant": variant, "seeds": len(per_seed),
              "first_seed": 0, "profile": profile}
    cell = store.Store(root).register(config, "hand")
    rows, results = [], {}
    for seed, value in per_seed.items():
        result = value if isinstance(value, dict) else {"last_score": value[0],
                                                        "best_score": value[1]}
        result = {"diverged": False, **result}
        results[str(seed)] = result
        rows += [{"seed": seed, "period": 0, "updates": updates // 2,
                  "normalized_score": result["best_score"]},
                 {"seed": seed, "period": 1, "updates": updates,
                  "normalized_score": result["last_score"]}]
    io.write_text_atomic(cell.path / "metrics.csv", pd.DataFrame(rows).to_csv(index=False))
    io.write_text_atomic(cell.path / "run.json", json.dumps(
        {"task": dataset.split("-")[0], "per_seed": results, "git_commit": "abc",
         "wall_s": 1.0}))
    if complete:
        cell.set_status("complete")
    return cell


def test_a_cell_whose_completion_was_killed_is_never_reported(tmp_path):
    make_cell(tmp_path, "bc", "hopper-medium", {0: (10.0, 20.0), 1: (30.0, 40.0)})
    late = make_cell(tmp_path, "iql", "hopper-medium", {0: (50.0, 60.0), 1: (70.0, 80.0)},
                     complete=False)
    odd = make_cell(tmp_path, "awac", "hopper-medium", {0: (1.0, 1.0)})
    (odd.path / "run.json").write_text(json.dumps({"task": "hopper"}))  # complete, no results
    late.set_status("running")
    killed_write(late.path / "status.json", json.dumps({"state": "complete"}))
    # a half-written metrics.csv next to it (its temp file) must not be read either
    (late.path / ".metrics.csv.x1.tmp").write_text("seed,period,normalized_score\n0,0,99")
    finals, _, incomplete = leaderboard.load_store(store.Store(tmp_path))
    assert set(finals.algorithm) == {"bc"}
    assert sorted(incomplete) == sorted([("cpu", f"{late.name} (running)"),
                                         ("cpu", f"{odd.name} (no per_seed in run.json)")])
    result = leaderboard.write_report(tmp_path, tmp_path / "out", reps=200, log=quiet)
    assert "iql" not in set(result["cpu"]["table"].entry)
    assert f"{late.name} (running)" in (tmp_path / "out" / "leaderboard.md").read_text()


def table_row(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines()
                if line.replace(" ", "").startswith(start.replace(" ", "")))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ---- leaderboard numbers by hand -----------------------------------------------------------

X_SCORES = {"hopper-medium": [1.0, 2.0, 3.0, 4.0], "walker2d-medium": [10.0, 20.0, 30.0, 40.0]}
Y_SCORES = {"hopper-medium": [2.0, 2.0, 5.0, 0.0], "walker2d-medium": [0.0, 1.0, 2.0, 3.0]}


@pytest.fixture
def hand_store(tmp_path):
    for algo, scores in (("xalg", X_SCORES), ("yalg", Y_SCORES)):
        for dataset, lasts in scores.items():
            make_cell(tmp_path / "store", algo, dataset,
                      {s: (last, last + 5.0 * s) for s, last in enumerate(lasts)})
    return tmp_path / "store"


def test_leaderboard_equals_hand_computation(hand_store, tmp_path):
    result = leaderboard.write_report(hand_store, tmp_path / "out", reps=2000, log=quiet)["cpu"]
    table = result["table"].set_index(["dataset", "entry"])
    # xalg on hopper: last 1,2,3,4 -> mean 2.5, population std sqrt(1.25);
    # best = last + 5*seed = 1,7,13,19 -> mean 10, std sqrt(45)
    row = table.loc[("hopper-medium", "xalg")]
    assert row.last_mean == 2.5 and row.last_std == pytest.approx(np.sqrt(1.25))
    assert row.best_mean == 10.0 and row.best_std == pytest.approx(np.sqrt(45.0))
    assert row.seeds == 4 and row.diverged == 0
    assert table.loc[("walker2d-medium", "yalg")].last_mean == 1.5
    agg = result["aggregate"].query("score == 'last_score'").set_index(["entry", "metric"])
    # IQM over the 8 runs x tasks of xalg: sorted 1,2,3,4,10,20,30,40 -> middle four 3,4,10,20
    assert agg.loc[("xalg", "IQM"), "value"] == pytest.approx(np.mean([3.0, 4.0, 10.0, 20.0]))
    every = np.array(X_SCORES["hopper-medium"] + X_SCORES["walker2d-medium"])
    assert agg.loc[("xalg", "IQM"), "value"] == pytest.approx(np.sort(every)[2:6].mean())
    # rliable's median is the median over tasks of the per-task mean: tasks 2.5 and 25
    assert agg.loc[("xalg", "Median"), "value"] == pytest.approx((2.5 + 25.0) / 2)
    assert agg.loc[("xalg", "Mean"), "value"] == pytest.approx(every.mean())
    for _, r in agg.iterrows():
        assert r.ci_low <= r.value <= r.ci_high and r.runs == 4 and r.tasks == 2
    # P(xalg > yalg): hopper: x=1 beats {0} (1); x=2 beats {0}, ties 2,2 (1 + 2*0.5);
    # x=3 and x=4 beat 2,2,0 (3 each) -> 9/16. walker2d: every x beats every y -> 1.
    poi = result["improvement"].query("score == 'last_score'").set_index(["x", "y"])
    assert poi.loc[("xalg", "yalg"), "p_x_better"] == pytest.approx((9 / 16 + 1) / 2)
    assert poi.loc[("yalg", "xalg"), "p_x_better"] == pytest.approx((7 / 16 + 0) / 2)
    tidy = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(tidy) == 16 and set(tidy.columns) >= {"algorithm", "dataset", "seed",
                                                     "last_score", "best_score", "profile"}
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert table_row(text, "| hopper-medium | xalg")[2:6] == ["2.5 ± 1.1", "10.0 ± 6.7", "4",
                                                              "0"]
    assert "profile `cpu`" in text and "100 updates, eval every 50" in text
    for png in ("aggregate_offline_intervals.png", "aggregate_offline_profiles.png",
                "curve_offline_hopper-medium.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_score_matrix_is_runs_by_tasks_and_matches_rliable(hand_store):
    from rliable import library as rly
    from rliable import metrics

    finals = leaderboard.entries(leaderboard.load_store(store.Store(hand_store))[0])
    matrices, tasks, left_out = leaderboard.score_matrices(finals, "last_score")
    assert tasks == ["hopper-medium", "walker2d-medium"] and not left_out
    np.testing.assert_array_equal(matrices["xalg"][:, 1], X_SCORES["walker2d-medium"])
    ours = leaderboard.aggregate(matrices, reps=500, seed=3).set_index(["entry", "metric"])
    again = leaderboard.aggregate(matrices, reps=500, seed=3).set_index(["entry", "metric"])
    pd.testing.assert_frame_equal(ours, again)  # reproducible whatever ran before
    np.random.seed(3)  # rliable resamples with numpy's global generator (see _seeded)
    _, cis = rly.get_interval_estimates(
        {"xalg": matrices["xalg"]}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=500,
        random_state=np.random.RandomState(3))
    # our vectorized P(X > Y) is rliable's statistic, ties included
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, (5, 3)).astype(float), rng.integers(0, 4, (4, 3)).astype(float)
        assert leaderboard.probability_of_improvement(x, y) == pytest.approx(
            metrics.probability_of_improvement(x, y))
    np.testing.assert_allclose([ours.loc[("xalg", "IQM"), "ci_low"],
                                ours.loc[("xalg", "IQM"), "ci_high"]], cis["xalg"][:, 0])


def test_o2o_section_shows_pretrain_dip_final_gain_regret(tmp_path):
    for seed_values, algo in (([(40.0, 10.0, 70.0), (60.0, 30.0, 90.0)], "cal_ql"),):
        make_cell(tmp_path / "store", algo, "hopper-medium", {
            s: {"last_score": last, "best_score": 95.0, "pretrain_score": pre, "dip": dip,
                "final_score": 70.0, "regret": 0.4}
            for s, (pre, dip, last) in enumerate(seed_values)}, mode="o2o")
    result = leaderboard.write_report(tmp_path / "store", tmp_path / "out", reps=100,
                                      log=quiet)["cpu"]
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    section = text.split("## o2o")[1]
    header = table_row(section, "| task |")
    cells = dict(zip(header, table_row(section, "| hopper-medium | cal_ql"), strict=True))
    # pretrain 40, 60 -> 50 ± 10 (population std); dip 10, 30 -> 20 ± 10; final 70, 90 -> 80;
    # gain per seed 30, 30 -> 30 ± 0
    assert (cells["pre-train"], cells["dip"], cells["final"], cells["gain"], cells["regret"]) == (
        "50.0 ± 10.0", "20.0 ± 10.0", "80.0 ± 10.0", "30.0 ± 0.0", "0.4 ± 0.0")
    # the aggregate of the gain: one task, two runs of 30 -> every statistic 30
    gain = result["aggregate"].query("score == 'gain'").set_index("metric").value
    assert gain.to_dict() == {"IQM": 30.0, "Median": 30.0, "Mean": 30.0}
    # one long CSV table: the section column, the o2o columns filled
    csv = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert list(csv.section) == ["o2o"] and csv.gain_mean.iloc[0] == 30.0


def test_hybrid_section_shows_steps_to_threshold_and_auc_with_and_without_data(tmp_path):
    root = tmp_path / "store"
    for ratio, steps, scores in ((0.5, [1000, 2000], [40.0, 80.0]),
                                 (0.0, [None, 3000], [10.0, 20.0])):
        cell = make_cell(root, "rlpd", "hopper-medium", {
            s: {"last_score": 50.0, "best_score": 60.0, "final_score": 50.0,
                "steps_to_threshold": st} for s, st in enumerate(steps)}, mode="hybrid",
            budget={"offline_ratio": ratio, "online_steps": 2000}, variant=f"offline_ratio={ratio}")
        # two online evaluations per seed, both at `scores[seed]`: the AUC is that score
        io.write_text_atomic(cell.path / "metrics.csv", pd.DataFrame(
            [{"seed": s, "period": p, "phase": "online", "env_steps": 1000 * (p + 1),
              "normalized_score": sc} for s, sc in enumerate(scores) for p in range(2)]
        ).to_csv(index=False))
    leaderboard.write_report(root, tmp_path / "out", reps=100, log=quiet)
    section = (tmp_path / "out" / "leaderboard.md").read_text().split("## hybrid")[1]
    header = table_row(section, "| task |")
    rows = {ratio: dict(zip(header, table_row(section, f"| hopper-medium | rlpd[offline_ratio="
                                                       f"{ratio}]"), strict=True))
            for ratio in (0.5, 0.0)}
    assert (rows[0.5]["data"], rows[0.0]["data"]) == ("with", "without")
    # the grid's label tells the two apart: no budget suffix, though their budgets differ
    assert rows[0.5]["algorithm"] == "rlpd[offline_ratio=0.5]"
    budgets = section.split("Budgets: ")[1].split("\n")[0]
    assert "offline_ratio 0.5" in budgets and "offline_ratio 0" in budgets
    # steps: median of 1000, 2000 = 1500 (2 of 2 reached); 3000 (1 of 2; one never did)
    assert rows[0.5]["steps to threshold"] == "1500 (2/2)"
    assert rows[0.0]["steps to threshold"] == "3000 (1/2)"
    assert rows[0.5]["AUC"] == "60.0 ± 20.0" and rows[0.0]["AUC"] == "15.0 ± 5.0"


def test_two_versions_of_a_dataset_are_never_pooled(tmp_path, capsys):

    root = tmp_path / "store"
    old = make_cell(root, "xalg", "hopper-medium", {0: (1.0, 2.0)}, dataset_sha256="aaa")
    new = make_cell(root, "xalg", "hopper-medium", {0: (9.0, 9.0)}, dataset_sha256="bbb")
    with pytest.raises(ValueError, match="2 versions of dataset hopper-medium"):
        leaderboard.write_report(root, tmp_path / "out", reps=100, log=quiet)
    # a sweep's report names its own cells: only the current version is read
    result = leaderboard.write_report(root, tmp_path / "out", reps=100, log=quiet,
                                      cells={new.name})["cpu"]
    assert result["table"].set_index("entry").loc["xalg"].last_mean == 9.0
    assert old.name != new.name


def test_a_sweeps_cells_are_those_of_the_dataset_version_on_disk(tmp_path, monkeypatch):
    root = tmp_path / "store"
    old = make_cell(root, "xalg", "hopper-medium", {0: (1.0, 2.0)}, dataset_sha256="aaa")
    new = make_cell(root, "xalg", "hopper-medium", {0: (9.0, 9.0)}, dataset_sha256="bbb")
    other = make_cell(root, "xalg", "walker2d-medium", {0: (5.0, 5.0)}, dataset_sha256="ccc")
    logged: list[str] = []
    # no dataset on disk is either version: which cells belong together cannot be decided
    monkeypatch.setattr("offbench.data.builder.dataset_fingerprint", lambda dataset: None)
    with pytest.raises(ValueError, match="2 versions of dataset hopper-medium and none is"):
        store.sweep_cells(store.Store(root), ["hand"], log=logged.append)
    # the rebuilt dataset is on disk: its cells, and the old version's are named as left out
    monkeypatch.setattr("offbench.data.builder.dataset_fingerprint", {"hopper-medium": "bbb"}.get)
    cells = store.sweep_cells(store.Store(root), ["hand"], log=logged.append)
    assert sorted(c.name for c in cells) == sorted([new.name, other.name])
    assert logged == [f"sweep(s) ['hand']: 1 cell(s) of an older version of hopper-medium "
                      f"left out (e.g. {old.name})"]


def test_profiles_are_never_mixed(tmp_path):
    root = tmp_path / "store"
    make_cell(root, "bc", "hopper-medium", {0: (10.0, 10.0), 1: (20.0, 20.0)}, profile="cpu")
    make_cell(root, "bc", "hopper-medium", {0: (80.0, 80.0), 1: (90.0, 90.0)}, profile="full",
              updates=1000)
    both = leaderboard.write_report(root, tmp_path / "all", reps=100, log=quiet)
    assert set(both) == {"cpu", "full"}
    for profile, expected in (("cpu", 15.0), ("full", 85.0)):
        table = pd.read_csv(tmp_path / "all" / profile / "leaderboard.csv")
        assert list(table.profile) == [profile] and list(table.last_mean) == [expected]
        assert set(pd.read_csv(tmp_path / "all" / profile / "scores.csv").profile) == {profile}
    only = leaderboard.write_report(root, tmp_path / "cpu", profile="cpu", reps=100, log=quiet)
    assert set(only) == {"cpu"} and not (tmp_path / "cpu" / "full").exists()
    assert "85.0" not in (tmp_path / "cpu" / "leaderboard.md").read_text()
    finals = leaderboard.load_store(store.Store(root))[0]
    with pytest.raises(AssertionError, match="profiles mixed"):
        leaderboard.write_profile(finals, pd.DataFrame(), tmp_path / "mixed", 100, [])
    with pytest.raises(ValueError, match="no complete cell of profile 'gpu'"):
        leaderboard.write_report(root, tmp_path / "x", profile="gpu", log=quiet)


def test_two_budgets_in_one_profile_are_separate_rows(tmp_path):
    root = tmp_path / "store"
    make_cell(root, "bc", "hopper-medium", {0: (10.0, 10.0)}, updates=100)
    make_cell(root, "bc", "hopper-medium", {0: (50.0, 50.0)}, updates=200)
    make_cell(root, "td3_bc", "hopper-medium", {0: (30.0, 30.0)}, updates=100)
    table = leaderboard.write_report(root, tmp_path / "out", reps=100, log=quiet)["cpu"]["table"]
    assert sorted(table.last_mean) == [10.0, 30.0, 50.0]
    # the label with two budgets carries its budget; the one with a single budget does not
    assert sorted(table.entry) == ["bc @ 100 updates, eval every 50 (10 episodes of 1000 steps)",
                                   "bc @ 200 updates, eval every 50 (10 episodes of 1000 steps)",
                                   "td3_bc"]


# ---- sweeps (tiny training) ----------------------------------------------------------------

SWEPT_LOG: list[str] = []  # what the `swept` sweep logged


@pytest.fixture(scope="module")
def swept(env_root):
    root = env_root / "store"
    result = sweep.run_sweep(tiny_spec(), store.Store(root), log=SWEPT_LOG.append)
    return root, result


def cell_of(root: Path, algorithm: str) -> store.CellDir:
    (cell,) = [c for c in store.Store(root).cells() if c.config()["algorithm"] == algorithm]
    return cell


def test_crashing_cell_is_recorded_and_the_sweep_goes_on(swept):
    root, result = swept
    bc, crash = cell_of(root, "bc"), cell_of(root, "harnesspkg.crash")
    assert result.ran == [bc.name] and list(result.failed) == [crash.name]
    assert "boom: a deliberate crash" in result.failed[crash.name]
    status = crash.status()
    assert status["state"] == "failed" and "boom" in status["error"]
    assert "ValueError" in status["traceback"]
    assert bc.complete
    metrics = pd.read_csv(bc.path / "metrics.csv")
    assert sorted(zip(metrics.seed, metrics.updates, strict=True)) == [
        (0, 100), (0, 200), (1, 100), (1, 200)]
    assert bc.config()["algo_config"]["hidden"] == [32, 32]
    assert json.loads((bc.path / "cell.json").read_text())["sweeps"][0] == "tiny"


def test_a_running_cell_logs_a_progress_line_per_evaluation_period(swept):
    root, _ = swept
    metrics = pd.read_csv(cell_of(root, "bc").path / "metrics.csv")
    progress = [line for line in SWEPT_LOG if line.startswith("    bc ")]
    # one line per evaluation period (tests/test_offline.py: also within a checkpoint chunk),
    # with the updates done of the total and the mean normalized score over the seeds of that
    # period's evaluation
    assert len(progress) == metrics.period.nunique() == 2
    for line, (updates, rows) in zip(progress, metrics.groupby("updates"), strict=True):
        assert f"updates {int(updates)}/200 ({int(updates) // 2}%):" in line
        assert f"score {rows.normalized_score.mean():.1f} (mean of 2 seeds)" in line
    # the cell's label counts its seeds in words ("1 seed", never "1 seeds")
    assert any(line.endswith("(offline, 2 seeds) -> " + str(cell_of(root, "bc").path))
               for line in SWEPT_LOG)
    assert [cells.seeds_phrase(n) for n in (1, 2)] == ["1 seed", "2 seeds"]


def test_resume_skips_complete_cells_and_retries_failed_ones(swept):
    root, _ = swept
    bc = cell_of(root, "bc")
    before = {p.name: p.stat().st_mtime_ns for p in bc.path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="did not complete.*pass --resume"):
        sweep.run_sweep(tiny_spec(), store.Store(root), log=quiet)  # the failed cell
    # another sweep sharing the store reuses the complete cell without --resume
    other = sweep.run_sweep(tiny_spec(name="other", algorithms=["bc"], sinks=[]),
                            store.Store(root), log=quiet)
    assert other.skipped == [bc.name] and other.ran == [] and not other.failed
    assert json.loads((bc.path / "cell.json").read_text())["sweeps"] == ["tiny", "other"]
    again = sweep.run_sweep(tiny_spec(), store.Store(root), resume=True, log=quiet)
    assert again.skipped == [bc.name] and again.ran == []
    assert list(again.failed) == [cell_of(root, "harnesspkg.crash").name]
    after = {p.name: p.stat().st_mtime_ns for p in bc.path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != "cell.json"} == {
        k: v for k, v in before.items() if k != "cell.json"}


def read_events(folder: Path) -> dict[tuple[str, int], float]:
    """Scalars of tensorboardX event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                out[(value.tag, event.step)] = value.simple_value
    return out


def test_tensorboard_sink_logs_what_metrics_csv_holds(swept):
    root, _ = swept
    bc = cell_of(root, "bc")
    events = read_events(bc.path / "tensorboard")
    metrics = pd.read_csv(bc.path / "metrics.csv")
    for _, row in metrics.iterrows():
        assert events[(f"seed{int(row.seed)}/eval_return", int(row.updates))] == pytest.approx(
            row.eval_return, rel=1e-6)


def test_store_report_of_a_sweep(swept, tmp_path):
    root, _ = swept
    result = leaderboard.write_report(root, tmp_path, reps=200, log=quiet)["test"]
    info = json.loads((cell_of(root, "bc").path / "run.json").read_text())
    lasts = [info["per_seed"][s]["last_score"] for s in ("0", "1")]
    row = result["table"].set_index("entry").loc["bc"]
    assert row.last_mean == pytest.approx(np.mean(lasts)) and row.seeds == 2
    text = (tmp_path / "leaderboard.md").read_text()
    assert "harnesspkg.crash" in text.split("Cells not included")[1]  # listed as not complete
    assert "`batch_size=64 hidden=32,32`" in text


def to_toml(spec: dict) -> str:
    lines = ([f"{k} = {json.dumps(v)}" for k, v in spec.items() if k not in ("budget", "report")]
             + ["[budget]"] + [f"{k} = {json.dumps(v)}" for k, v in spec["budget"].items()])
    for table in spec.get("report", []):
        lines += ["[[report]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_bench_runs_submitted_algorithms_beside_the_profile(swept, tmp_path, monkeypatch):
    from offbench import cli

    root, _ = swept
    bc = cell_of(root, "bc")
    before = (bc.path / "metrics.csv").stat().st_mtime_ns
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "test.toml").write_text(to_toml(tiny_spec(algorithms=["bc"])))
    monkeypatch.setattr(cli, "SWEEPS_DIR", tmp_path / "sweeps")
    code = cli.main(["bench", "--profile", "test", "--algos", "harnesspkg.good", "--store",
                     str(root), "--out", str(tmp_path / "results"), "--reps", "200"])
    assert code == 0
    table = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert set(table.entry) == {"bc", "harnesspkg.good"} and set(table.profile) == {"test"}
    assert (bc.path / "metrics.csv").stat().st_mtime_ns == before  # reused, not rerun
    assert cli.main(["bench", "--profile", "nope", "--store", str(root)]) == 2
    # without --out a submission's leaderboard goes to its own folder, never over results/
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--profile", "test", "--algos", "harnesspkg.good", "--store",
                     str(root), "--reps", "200"]) == 0
    assert (tmp_path / "results" / "submissions" / "harnesspkg.good" / "leaderboard.md").exists()
    assert cli.submission_folder(["a/b/mine.py", "x.y"]) == Path(
        "results/submissions/mine+x.y")


def test_bench_states_its_time_and_a_resumed_run_cites_the_from_scratch_one(env_root, tmp_path,
                                                                           monkeypatch):
    from offbench import cli

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "test.toml").write_text(
        to_toml(tiny_spec(algorithms=["bc"], notes="What this profile leaves out.")))
    monkeypatch.setattr(cli, "SWEEPS_DIR", tmp_path / "sweeps")
    args = ["bench", "--profile", "test", "--store", str(tmp_path / "store"), "--out",
            str(tmp_path / "out"), "--reps", "100", "--started-at", "0"]
    assert cli.main(args) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "What this profile leaves out." in text
    # --started-at 0: the time since 1970, far more than the run; every cell was fresh
    minutes = float(re.search(r"took ([0-9.]+) min on this machine, every one of its 1 cells",
                              text).group(1))
    assert minutes > 1e6
    record = json.loads((tmp_path / "store" / "bench-test.json").read_text())
    assert record["minutes"] == pytest.approx(minutes, abs=0.06) and len(record["cells"]) == 1
    assert cli.main(args[:-2]) == 0  # rerun: the cell is reused; the record is cited, not replaced
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "1 of its 1 cells were complete before it" in text
    assert f"The from-scratch run of these 1 cells took {record['minutes']:.1f} min" in text
    assert json.loads((tmp_path / "store" / "bench-test.json").read_text()) == record


def test_sweep_killed_between_cells_resumes_to_the_same_report(swept, env_root, tmp_path):
    root, _ = swept
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(to_toml(tiny_spec()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(env_root / "code")]),
           "MINARI_DATASETS_PATH": str(env_root / "minari")}
    args = ["sweep", str(spec_path), "--store", str(tmp_path / "store")]
    base = [sys.executable, "-m", "offbench.cli", *args]
    killed = run_cli_killed(args, after_cells=1, env=env, timeout=600)
    assert killed.returncode == 17, killed.stderr
    resumed = subprocess.run([*base, "--resume", "--out", str(tmp_path / "out"), "--reps",
                              "200"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 1, resumed.stderr  # the crashing cell still fails
    assert "0 cell(s) ran, 1 complete before, 1 failed" in resumed.stdout
    mine = pd.read_csv(cell_of(tmp_path / "store", "bc").path / "metrics.csv")
    reference = pd.read_csv(cell_of(root, "bc").path / "metrics.csv")
    pd.testing.assert_frame_equal(mine.drop(columns="wall_s"), reference.drop(columns="wall_s"),
                                  check_exact=True)
    leaderboard.write_report(root, tmp_path / "reference", reps=200, log=quiet)
    for name in ("leaderboard.csv", "aggregate.csv"):  # the reference store may hold more
        mine, ref = (pd.read_csv(tmp_path / d / name).query("entry == 'bc'")
                     .reset_index(drop=True) for d in ("out", "reference"))
        assert len(mine) > 0
        pd.testing.assert_frame_equal(mine, ref)


def test_sinks_wandb_skipped_without_its_package_and_unknown_names_refused(tmp_path,
                                                                          monkeypatch):
    import importlib.util

    from offbench.harness import sinks

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    logged = []
    assert sinks.open_sinks(["wandb"], tmp_path, {}, log=logged.append) == []
    assert "wandb sink skipped: the wandb package is not installed" in logged[0]
    with pytest.raises(ValueError, match="unknown logging sinks"):
        sinks.open_sinks(["mlflow"], tmp_path, {})


KILLED_IN_A_CELL = """
import dataclasses, os, sys
from offbench.loops import offline
from offbench.harness import cells, store, sweep

def run(cell, out, resume, sinks):  # the offline runner, killed after its first checkpoint
    c = cell.config
    offline.train(c["algorithm"], c["dataset"], c["seeds"],
                  offline.OfflineConfig(**c["budget"]), cells.algo_config_from(c), out,
                  resume=resume, first_seed=c["first_seed"], progress=False,
                  after_chunk=lambda n: os._exit(17))

cells.register_mode(dataclasses.replace(cells.MODES["offline"], run=run))
sweep.run_sweep(sweep.load_spec(sys.argv[1]), store.Store(sys.argv[2]))
"""


def test_sweep_killed_inside_a_cell_resumes_it_bit_for_bit(swept, env_root, tmp_path):
    root, _ = swept
    spec_path = tmp_path / "bc.toml"
    spec_path.write_text(to_toml(tiny_spec(algorithms=["bc"])))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(env_root / "code")]),
           "MINARI_DATASETS_PATH": str(env_root / "minari")}
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_A_CELL, str(spec_path),
                             str(tmp_path / "store")], env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == 17, killed.stderr
    cell = cell_of(tmp_path / "store", "bc")
    assert cell.status()["state"] == "running"  # a report would skip it
    assert len(pd.read_csv(cell.path / "metrics.csv")) == 2  # one of two chunks
    resumed = subprocess.run([sys.executable, "-m", "offbench.cli", "sweep", str(spec_path),
                              "--store", str(tmp_path / "store"), "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert cell.complete
    mine = pd.read_csv(cell.path / "metrics.csv").drop(columns="wall_s")
    reference = pd.read_csv(cell_of(root, "bc").path / "metrics.csv").drop(columns="wall_s")
    pd.testing.assert_frame_equal(mine, reference, check_exact=True)


# ---- the Ray executor ----------------------------------------------------------------------

def test_ray_executor_gives_the_local_executors_store(swept, env_root, tmp_path, monkeypatch):
    """The tiny sweep's two cells (bc, and a module that crashes) as Ray tasks on a local Ray
    instance of 2 CPUs (both cells at once, each in its own worker process) land in the store
    as the local executor's did: the same folders and configs, the crash recorded with its
    error, bc's per-seed metrics bit for bit and the same leaderboard; then --resume skips the
    complete cell and retries the failed one."""
    import ray

    root, _ = swept
    # the workers import the code from here, and the test's module package, as the driver does
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), str(env_root / "code"), os.environ.get("PYTHONPATH", "")]))
    mine = store.Store(tmp_path / "store")
    logged: list[str] = []
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # Ray's telemetry: nothing leaves
    # "local": a new instance, never a cluster that `ray start` left on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        result = sweep.run_sweep(tiny_spec(), mine, log=logged.append, executor="ray")
        again = sweep.run_sweep(tiny_spec(), mine, resume=True, log=logged.append,
                                executor="ray")
        # a cell no node can take would wait forever: refused on a local instance, else a note
        from offbench.harness import ray_executor

        gpu = ray_executor.RayOptions(gpus_per_cell=1)
        with pytest.raises(ValueError, match="no node of the Ray cluster has 1 CPU"):
            ray_executor._check_resources(gpu, local=True, log=quiet)
        ray_executor._check_resources(gpu, local=False, log=logged.append)
        assert "or the cells wait until such a node joins" in logged[-1]
    finally:
        ray.shutdown()
    bc, crash = cell_of(tmp_path / "store", "bc"), cell_of(tmp_path / "store", "harnesspkg.crash")
    assert {bc.name, crash.name} == {cell_of(root, a).name for a in ("bc", "harnesspkg.crash")}
    assert result.ran == [bc.name] and list(result.failed) == [crash.name] and not result.skipped
    assert "boom: a deliberate crash" in result.failed[crash.name]
    assert again.skipped == [bc.name] and again.ran == [] and list(again.failed) == [crash.name]
    assert sum("submitted" in line for line in logged) == 3, logged
    status = crash.status()
    assert status["state"] == "failed" and "boom" in status["error"]
    assert "ValueError" in status["traceback"]
    assert bc.complete and bc.config() == cell_of(root, "bc").config()
    reference = cell_of(root, "bc").path
    pd.testing.assert_frame_equal(
        pd.read_csv(bc.path / "metrics.csv").drop(columns="wall_s"),
        pd.read_csv(reference / "metrics.csv").drop(columns="wall_s"), check_exact=True)
    # run.json: the same per-seed results, settings, versions, machine and command (the
    # sweep's, not the Ray worker's own argv); only the date and the times differ
    run, ref_run = ({k: v for k, v in json.loads((p / "run.json").read_text()).items()
                     if k not in ("date", "wall_s", "compile_s")} for p in (bc.path, reference))
    assert run == ref_run and run["per_seed"] and "default_worker" not in run["command"]
    assert (bc.path / "settings.json").read_text() == (reference / "settings.json").read_text()
    assert (bc.path / "tensorboard").is_dir()
    leaderboard.write_report(tmp_path / "store", tmp_path / "out", reps=200, log=quiet)
    leaderboard.write_report(root, tmp_path / "reference", reps=200, log=quiet)
    for name in ("leaderboard.csv", "aggregate.csv"):  # the reference store may hold more
        ours, ref = (pd.read_csv(tmp_path / d / name).query("entry == 'bc'")
                     .reset_index(drop=True) for d in ("out", "reference"))
        assert len(ours) > 0
        pd.testing.assert_frame_equal(ours, ref)


def test_ray_executor_address_and_refusals(env_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    from offbench import cli
    from offbench.harness import ray_executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_executor.resolve_address(None) == "local"  # not a cluster found lying around
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_executor.resolve_address(None) == "head:6379"
    assert ray_executor.resolve_address("other:6379") == "other:6379"
    args = cli.build_parser().parse_args(["sweep", "x.toml", "--executor", "ray",
                                          "--ray-address", "h:1", "--ray-gpus-per-cell", "1"])
    assert (args.ray_address, args.ray_cpus_per_cell, args.ray_gpus_per_cell) == ("h:1", 1, 1)
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(to_toml(tiny_spec()))
    assert cli.main(["sweep", str(spec_path), "--ray-address", "h:1", "--store",
                     str(tmp_path)]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be >= 0"):
        ray_executor.RayOptions(cpus_per_cell=-1)
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        sweep.run_sweep(tiny_spec(), store.Store(tmp_path), executor="dask", log=quiet)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the ray package.*\[ray\]"):
        sweep.run_sweep(tiny_spec(), store.Store(tmp_path), executor="ray", log=quiet)
    assert not (tmp_path / "cells").exists()  # refused before anything was written


# ---- offbench check ------------------------------------------------------------------------

def run_check(target: str, overrides=()) -> tuple[bool, str]:
    from offbench.harness.check import check

    lines: list[str] = []
    ok = check(target, list(overrides), log=lines.append)
    return ok, "\n".join(lines)


def test_check_accepts_a_baseline_and_the_good_template(tmp_path):
    ok, text = run_check("bc", ["hidden=32,32"])
    assert ok, text
    (tmp_path / "good.py").write_text(module_text())
    ok, text = run_check(str(tmp_path / "good.py"))
    assert ok and "FAIL" not in text, text


def test_check_runs_the_hybrid_loop_a_module_declares():
    # RLPD steps its actor once per utd=20 updates and reports NaN actor metrics in between
    # ("not computed"): the check runs 20 updates to see them computed
    ok, text = run_check("rlpd", ["hidden=32,32", "num_critics=2"])
    assert ok, text
    assert "update under jit: 20 updates" in text, text
    assert re.search(r"^ok +hybrid mode: the O2O/hybrid loop on hopper", text, re.M), text
    assert re.search(r"^ok +online mode: the online loop on hopper", text, re.M), text


@pytest.mark.parametrize("name,overrides,mode", [
    # H2O reads the hybrid loop's dataset/env marks, which the check's batches must carry
    ("h2o", ["hidden=32,32"], "hybrid"),
    # SPOT fits its VAE first (metrics of its TD3 part NaN until then): a 1-step VAE phase
    ("spot", ["hidden=32,32", "vae_steps=1", "vae_hidden=32,32"], "o2o"),
    # WSRL's online step is RLPD's, whose actor metrics are NaN between the actor's steps
    ("wsrl", ["hidden=32,32", "num_critics=2"], "o2o")])
def test_check_accepts_the_baselines_with_special_batches_or_phases(name, overrides, mode):
    ok, text = run_check(name, overrides)
    assert ok, text
    assert re.search(rf"^ok +{mode} mode", text, re.M), text


def test_check_runs_the_online_loop_a_module_declares(tmp_path, monkeypatch):
    from offbench.loops import online

    path = tmp_path / "onl.py"
    path.write_text(module_text().replace('MODES = ("offline",)', 'MODES = ("offline", "online")'))
    ok, text = run_check(str(path))
    assert ok and re.search(r"^ok +online mode: the online loop on hopper", text, re.M), text
    # a loop whose evaluations come back NaN fails that step, with the numbers
    real = online.make_chunk

    def nan_returns(problem, periods):
        chunk = real(problem, periods)

        def broken(carry, first):
            carry, (metrics, snaps) = chunk(carry, first)
            return carry, ({**metrics, "eval_return": metrics["eval_return"] * jnp.nan}, snaps)
        return broken
    monkeypatch.setattr(online, "make_chunk", nan_returns)
    ok, text = run_check(str(path))
    assert not ok and re.search(r"^FAIL +online mode.*evaluation returns are \[nan nan\]", text,
                                re.M), text


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_check_rejects_each_broken_module(fault, tmp_path):
    path = tmp_path / f"{fault}.py"
    path.write_text(module_text(fault))
    ok, text = run_check(str(path))
    assert not ok
    fails = [line for line in text.splitlines() if line.startswith("FAIL")]
    assert fails and any(BROKEN[fault][1] in line for line in fails), text


def test_check_cli_exit_codes(tmp_path):
    path = tmp_path / "nan_loss.py"
    path.write_text(module_text("nan_loss"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = subprocess.run([sys.executable, "-m", "offbench.cli", "check", str(path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "not keep" in bad.stdout


MIXED_BUDGET = {"online_steps": 40, "eval_every": 20, "eval_episodes": 2,
                "checkpoint_every": 20, "episode_length": 20}


def test_o2o_and_hybrid_cells_run_and_report_their_metrics(env_root, tmp_path):
    """Two sweeps share one store: IQL O2O and RLPD hybrid cells run through offbench/loops/o2o.py,
    and the leaderboard's mode tables show what their run.json recorded."""
    root = tmp_path / "store"
    o2o_spec = tiny_spec(name="o2o", algorithms=["iql"], modes=["o2o"], sinks=[],
                         budget={**MIXED_BUDGET, "offline_updates": 40})
    hybrid_spec = tiny_spec(name="hybrid", algorithms=["rlpd"], modes=["hybrid"], sinks=[],
                            set=["hidden=32,32", "batch_size=64", "utd=2"],
                            budget={**MIXED_BUDGET, "threshold": -1e9})
    for spec, group in ((o2o_spec, 1), (hybrid_spec, None)):
        result = sweep.run_sweep(spec, store.Store(root), log=quiet, seed_group=group)
        assert len(result.ran) == 1 and not result.failed
    iql, rlpd = cell_of(root, "iql"), cell_of(root, "rlpd")
    # --seed-group reaches the loop (recorded in run.json) and is not part of a cell's identity
    assert json.loads((iql.path / "run.json").read_text())["seed_group"] == 1
    assert json.loads((rlpd.path / "run.json").read_text())["seed_group"] is None
    assert "seed_group" not in json.dumps(iql.config())
    # IQL's published fine-tuning setting reached the resolved config, as `offbench run` does it
    assert iql.config()["algo_config"]["actor_lr_schedule"] == "constant"
    assert rlpd.config()["budget"]["offline_ratio"] == 0.5 and rlpd.config()["budget"]["utd"] == 2
    per_seed = json.loads((iql.path / "run.json").read_text())["per_seed"]
    leaderboard.write_report(root, tmp_path / "out", reps=100, log=quiet)
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    o2o = text.split("## o2o")[1].split("## hybrid")[0]
    cells = dict(zip(table_row(o2o, "| task |"), table_row(o2o, f"| {DATASET} | iql"),
                     strict=True))
    pre = [per_seed[s]["pretrain_score"] for s in ("0", "1")]
    assert cells["pre-train"] == f"{np.mean(pre):.1f} ± {np.std(pre):.1f}"
    hybrid = text.split("## hybrid")[1]
    cells = dict(zip(table_row(hybrid, "| task |"), table_row(hybrid, f"| {DATASET} | rlpd"),
                     strict=True))
    # every evaluation clears a threshold of -1e9: reached at the first online evaluation
    assert cells["steps to threshold"] == "20 (2/2)" and cells["data"] == "with"


def test_offline_check_report_of_a_sweeps_cells(swept, tmp_path, capsys):
    """`report-offline --sweep NAME` reads exactly the cells NAME ran, and only finished ones."""
    from offbench import cli

    root, _ = swept
    assert cli.main(["report-offline", "--sweep", "tiny", "--store", str(root),
                     "--out", str(tmp_path / "a.md")]) != 0  # the crashing cell
    assert re.search("have not finished.*--resume", capsys.readouterr().err)
    assert cli.main(["report-offline", "--sweep", "nope", "--store", str(root),
                     "--out", str(tmp_path / "b.md")]) != 0
    assert "no cell of sweep 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "a.md").exists() and not (tmp_path / "b.md").exists()
    sweep.run_sweep(tiny_spec(name="bc-only", algorithms=["bc"], sinks=[]), store.Store(root),
                    log=quiet)  # reuses the complete bc cell, tagging it with this sweep
    assert cli.main(["report-offline", "--sweep", "bc-only", "--store", str(root),
                     "--out", str(tmp_path / "check.md")]) == 0
    finals = pd.read_csv(tmp_path / "check.csv")
    info = json.loads((cell_of(root, "bc").path / "run.json").read_text())
    assert sorted(finals.last_score) == sorted(r["last_score"] for r in info["per_seed"].values())
    assert set(finals.algorithm) == {"bc"}
    # a grid's cells are labelled by their variant, beside another sweep's cells in one report
    # (in a copy of the store: the module's other tests expect one bc cell in `swept`'s)
    root = tmp_path / "grid-store"
    shutil.copytree(swept[0], root)
    sweep.run_sweep(tiny_spec(name="grid", algorithms=["bc"], sinks=[], algorithms_set={
        "bc": {"grid": {"batch_size": ["32"]}}}), store.Store(root), log=quiet)
    assert cli.main(["report-offline", "--sweep", "bc-only", "--sweep", "grid", "--store",
                     str(root), "--out", str(tmp_path / "both.md")]) == 0
    both = pd.read_csv(tmp_path / "both.csv")
    assert sorted(set(both.algorithm)) == ["bc", "bc[batch_size=32]"]
    assert "| bc[batch_size=32] |" in (tmp_path / "both.md").read_text().replace("  ", " ")
    assert cli.main(["report-offline", "--sweep", "grid", "--store", str(root), "--datasets",
                     "hopper-medium", "--out", str(tmp_path / "none.md")]) != 0
    assert "--datasets ['hopper-medium']: no cell" in capsys.readouterr().err
    # --datasets picks cells before the completeness check: an unfinished cell of another
    # dataset in the same sweep does not block the report of this dataset's finished cells
    other = make_cell(root, "bc", "hopper-medium", {0: (1.0, 1.0)}, complete=False)
    store.Store(root).register(other.config(), "grid")
    assert cli.main(["report-offline", "--sweep", "grid", "--store", str(root),
                     "--out", str(tmp_path / "all.md")]) != 0
    assert re.search("1 cell.*have not finished", capsys.readouterr().err)
    assert cli.main(["report-offline", "--sweep", "grid", "--store", str(root), "--datasets",
                     DATASET, "--out", str(tmp_path / "one.md")]) == 0
    assert list(pd.read_csv(tmp_path / "one.csv").algorithm.unique()) == ["bc[batch_size=32]"]


def test_sweep_datasets_option_runs_a_subset_of_the_same_cells(swept, tmp_path, capsys):
    from offbench import cli

    root, _ = swept
    spec = tmp_path / "two.toml"
    spec.write_text(to_toml(tiny_spec(name="two", algorithms=["bc"], sinks=[],
                                      datasets=[DATASET, "hopper-medium-100k"])))
    assert cli.main(["sweep", str(spec), "--store", str(root), "--datasets", "nope"]) != 0
    assert "--datasets ['nope'] not in the spec's datasets" in capsys.readouterr().err
    # only DATASET: its bc cell is the one the fixture's sweep ran, so nothing runs
    assert cli.main(["sweep", str(spec), "--store", str(root), "--datasets", DATASET]) == 0
    assert "0 cell(s) ran, 1 complete before, 0 failed" in capsys.readouterr().out
    assert "two" in json.loads((cell_of(root, "bc").path / "cell.json").read_text())["sweeps"]


def read_wandb_history(run_file: Path) -> list[dict]:
    """History rows of an offline W&B run file: a 7-byte header (":W&B", magic, version), then
    LevelDB-log records (crc32, length, type) in 32 KiB blocks holding wandb's Record protos.
    Read here independently of wandb's own reader (its Python one left the package)."""
    from wandb.proto import wandb_internal_pb2

    data, block, i, buffer, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while i + 7 <= len(data):
        room = block - i % block
        if room < 7:  # a block's tail too short for a header is padding
            i += room
            continue
        _, length, kind = struct.unpack("<IHB", data[i:i + 7])
        if length == 0 and kind == 0:
            break
        buffer += data[i + 7:i + 7 + length]
        i += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            buffer = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_sink_logs_what_metrics_csv_holds_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (make setup installs it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rows = [{"seed": 0, "period": 0, "updates": 10, "eval_return": 1.5, "critic_loss": 2.0},
            {"seed": 1, "period": 0, "updates": 10, "eval_return": 2.5, "critic_loss": 3.0},
            {"seed": 0, "period": 1, "updates": 20, "eval_return": 4.5, "critic_loss": 1.0}]
    from offbench.harness import sinks

    (sink,) = sinks.open_sinks(["wandb"], tmp_path, {"algorithm": "bc"}, log=quiet)
    sink.write(rows[:2])
    sink.write(rows[2:])
    sink.close()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    logged = {}
    for row in read_wandb_history(run_file):
        for key, value in row.items():
            if not key.startswith("_"):
                logged[(key, row["_step"])] = value
    assert logged == {(f"seed{r['seed']}/{k}", r["updates"]): r[k]
                      for r in rows for k in ("eval_return", "critic_loss")}


SWEEP_SPECS = sorted((Path(__file__).resolve().parents[1] / "tasks" / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SWEEP_SPECS, ids=lambda p: p.stem)
def test_every_committed_sweep_spec_expands(path):
    # a typo in a spec behind a make target would otherwise surface only when someone runs it
    spec = sweep.load_spec(path)
    cells = sweep.expand(spec, quiet)
    assert cells and all(c.config["seeds"] == spec.get("seeds", 1) for c in cells)
    if spec["name"] == "robustness-riql":  # per-dataset settings by exact id, variants included
        sigmas = {c.config["dataset"]: c.config["algo_config"]["huber_sigma"] for c in cells
                  if c.config["algorithm"] == "riql"}
        assert sigmas["halfcheetah-medium-100k+corrupt=rew:random:0.3:1.0"] == 3.0
        assert sigmas["halfcheetah-medium-100k"] == 1.0  # the default on clean data
    if spec["name"] == "offline-diagnosis-ensemble":  # a typed grid over a shared set
        configs = {(tuple(c.config["algo_config"]["hidden"]),
                    c.config["algo_config"]["num_critics"]) for c in cells}
        assert configs == {((64, 64), 20), ((64, 64), 50), ((64, 64), 100)}
    # its declared reports and needed specs are well formed, and no two specs write one file
    declared.parse(spec)
    declared.needs(spec, path)


def test_committed_specs_write_distinct_reports():
    outs = [r["out"] for p in SWEEP_SPECS for r in declared.parse(sweep.load_spec(p))]
    assert outs and len(outs) == len(set(outs))
    assert "results/checks/offline/check.md" in outs


def test_bad_report_tables_fail_before_anything_runs(swept, tmp_path, capsys):
    from offbench import cli

    root, _ = swept
    spec = tiny_spec(name="bad-report", algorithms=["bc"], sinks=[])
    spec["report"] = [{"kind": "leaderboard", "out": "x.md"},
                      {"kind": "offline", "out": "y.md", "samples": 3},
                      {"kind": "probe", "out": 5}]
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(spec))
    before = sorted(p.name for p in (root / "cells").iterdir())
    assert cli.main(["sweep", str(path), "--store", str(root)]) == 2
    err = capsys.readouterr().err
    for problem in ("report[0].kind: 'leaderboard' is not one of",
                    "report[1].samples: not a field of a 'offline' report",
                    "report[1].budget: missing", "report[2].out: expected str, got 5"):
        assert problem in err
    assert sorted(p.name for p in (root / "cells").iterdir()) == before
    # --report on a spec that declares none is refused too
    path.write_text(to_toml(tiny_spec(name="no-report", algorithms=["bc"], sinks=[])))
    assert cli.main(["sweep", str(path), "--store", str(root), "--report"]) == 2
    assert "declares no [[report]]" in capsys.readouterr().err


def test_sweep_report_writes_what_the_spec_declares_after_its_needs(swept, tmp_path, capsys):
    """`offbench sweep SPEC --report` (make sweep): the needed spec runs first, then the
    declared report reads both sweeps' cells, the same report report-offline writes."""
    from offbench import cli

    # in a copy of the store: the module's other tests expect one bc cell in `swept`'s
    root = tmp_path / "store"
    shutil.copytree(swept[0], root)
    (tmp_path / "base.toml").write_text(to_toml(tiny_spec(name="base", algorithms=["bc"],
                                                          sinks=[])))
    spec = tiny_spec(name="with-report", algorithms=["bc"], sinks=[],
                     set=["hidden=32,32", "batch_size=32"])
    spec["needs"] = ["base.toml"]
    spec["report"] = [{"kind": "offline", "out": str(tmp_path / "out" / "check.md"),
                       "budget": "tiny", "title": "Declared", "sweeps": ["base", "with-report"]}]
    (tmp_path / "main.toml").write_text(to_toml(spec))
    assert cli.main(["sweep", str(tmp_path / "main.toml"), "--store", str(root),
                     "--report"]) == 0
    out = capsys.readouterr().out
    assert out.index("needs") < out.index("sweep 'base': ") < out.index("sweep 'with-report': ")
    text = (tmp_path / "out" / "check.md").read_text()
    assert text.startswith("# Declared") and "tiny" in text
    finals = pd.read_csv(tmp_path / "out" / "check.csv")
    # both sweeps' cells, told apart by the override that differs: 2 cells x 2 seeds
    assert sorted(set(finals.algorithm)) == ["bc[batch_size=32]", "bc[batch_size=64]"]
    assert len(finals) == 4
    assert cli.main(["report-offline", "--sweep", "base", "--sweep", "with-report", "--store",
                     str(root), "--budget", "tiny", "--title", "Declared",
                     "--out", str(tmp_path / "direct.md")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "direct.csv"), finals)
    # the spec changed (other settings): its report reads the cells it asks for now, not the
    # sweep's earlier cell, which the store keeps under the same sweep name
    spec["set"] = ["hidden=32,32", "batch_size=16"]
    (tmp_path / "main.toml").write_text(to_toml(spec))
    assert cli.main(["sweep", str(tmp_path / "main.toml"), "--store", str(root), "--resume",
                     "--report"]) == 0
    assert "1 cell(s) its spec no longer asks for left out" in capsys.readouterr().out
    finals = pd.read_csv(tmp_path / "out" / "check.csv")
    assert sorted(set(finals.algorithm)) == ["bc[batch_size=16]", "bc[batch_size=64]"]


def test_a_module_outside_baselines_loads_by_file_path_or_from_the_working_folder(
        tmp_path, monkeypatch):
    """`offbench run/check/bench` take a contributed module as a dotted path importable from
    the folder the user works in (as `python -m` finds it) or as the path of its .py file."""
    from offbench.algorithms import load_algorithm

    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mine.py").write_text(GOOD_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_algorithm("mypkg.mine").__name__ == "mypkg.mine"
    by_file = load_algorithm(str(package / "mine.py"))
    assert by_file.__name__ == "mine" and hasattr(by_file, "update")
    for bad, message in (("mypkg.nope", "cannot import algorithm module 'mypkg.nope'"),
                         ("nope_pkg.mine", "cannot import algorithm module 'nope_pkg.mine'"),
                         (str(tmp_path / "none.py"), "does not exist"),
                         ("nope", "unknown algorithm 'nope'")):
        with pytest.raises(ValueError, match=re.escape(message)):
            load_algorithm(bad)


RUN_FLAGS = ["--seeds", "2", "--updates", "200", "--eval-every", "100", "--eval-episodes", "2",
             "--checkpoint-every", "100", "--episode-length", "20", "--backend", "mujoco",
             "--set", "hidden=32,32", "--set", "batch_size=64"]


def comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.drop(columns=[c for c in metrics.columns if "wall" in c or c == "time"])


def test_offbench_run_is_a_one_cell_sweep(env_root, tmp_path, capsys):
    """`offbench run` and a sweep cell of the same request resolve to the same run description
    (cells.resolve) and train to identical metrics (cells.run_cell)."""
    from offbench import cli

    assert cli.main(["run", "bc", DATASET, *RUN_FLAGS, "--out", str(tmp_path / "run")]) == 0
    assert "normalized score over 2 seeds" in capsys.readouterr().out
    spec = tiny_spec(name="as-run", profile=cells.RUN_PROFILE, algorithms=["bc"], sinks=[])
    root = tmp_path / "store"
    assert sweep.run_sweep(spec, store.Store(root), log=quiet).failed == {}
    (cell,) = store.Store(root).cells()
    run_config = cells.resolve("bc", DATASET, "offline", items=["hidden=32,32", "batch_size=64"],
                               budget=BUDGET, seeds=2)
    assert run_config == cell.config()
    pd.testing.assert_frame_equal(
        comparable(pd.read_csv(tmp_path / "run" / "metrics.csv")),
        comparable(pd.read_csv(cell.path / "metrics.csv")), check_exact=True)
    # the folder refuses a second run without --resume, before touching it
    assert cli.main(["run", "bc", DATASET, *RUN_FLAGS, "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


CUSTOM_MODE_RUN = """
import dataclasses, sys
from offbench import cli
from offbench.harness import cells

# a mode registered by a test: offline training under another name
cells.register_mode(dataclasses.replace(cells.MODES["offline"], name="offline-again"))
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_registered_mode_runs_from_offbench_run(env_root, tmp_path):
    module = tmp_path / "mine.py"
    module.write_text(module_text().replace('MODES = ("offline",)',
                                            'MODES = ("offline", "offline-again")'))
    script = tmp_path / "run.py"
    script.write_text(CUSTOM_MODE_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(env_root / "code")])}
    done = subprocess.run([sys.executable, str(script), "run", str(module), DATASET, "--mode",
                           "offline-again", *RUN_FLAGS[:-4], "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "complete"
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 2 * 2  # 2 seeds x 2 evals
    unknown = subprocess.run([sys.executable, "-m", "offbench.cli", "run", "bc", DATASET,
                              "--mode", "nope"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert unknown.returncode != 0 and "mode 'nope' has no runner here" in unknown.stderr


@pytest.mark.parametrize("change,message", [
    ({"seeds": 2.7}, "seeds = 2.7: expected a whole number >= 1"),
    ({"seeds": True}, "seeds = True: expected a whole number >= 1"),
    ({"seeds": "two"}, "seeds = 'two': expected a whole number >= 1"),
    ({"first_seed": -1}, "first_seed = -1: expected a whole number >= 0"),
    ({"budget": {**BUDGET, "updates": "100"}}, "offline budget updates = '100': expected int"),
    ({"budget": {**BUDGET, "updates": 100.0}}, "offline budget updates = 100.0: expected int"),
    ({"budget": {**BUDGET, "eval_episodes": True}}, "eval_episodes = True: expected int"),
])
def test_bad_spec_values_fail_before_anything_is_written(env_root, tmp_path, change, message):
    spec = tiny_spec(algorithms=["bc"], sinks=[], **change)
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("change,message", [
    ({"sinks": ["mlflow"]}, "unknown logging sinks ['mlflow']"),
    ({"backend": "gpu"}, "backend = 'gpu'; valid: "),
])
def test_unknown_names_in_a_spec_fail_before_anything_is_written(env_root, tmp_path, change,
                                                                 message):
    spec = tiny_spec(algorithms=["bc"], **change)
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    assert not (tmp_path / "store").exists()


def test_store_check_passes_a_healthy_store_and_names_each_damage(swept, tmp_path, capsys):
    from offbench import cli

    root = tmp_path / "store"
    shutil.copytree(swept[0], root)
    bc, crash = cell_of(root, "bc"), cell_of(root, "harnesspkg.crash")
    # the failed cell is named with the command that reruns it
    assert cli.main(["store", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{crash.name}: not complete (state: failed)" in out and "--resume" in out
    assert bc.name not in out
    shutil.rmtree(crash.path)
    assert cli.main(["store", "check", str(root)]) == 0
    assert "0 incomplete or damaged" in capsys.readouterr().out
    # damage: a checkpoint lost, then a config edited by hand
    latest = max((bc.path / "checkpoints").glob("[0-9]*"), key=lambda p: int(p.name))
    shutil.rmtree(latest)
    assert cli.main(["store", "check", str(root)]) == 1
    assert "metrics.csv (2 evaluations) and checkpoints (last 1) disagree" in \
        capsys.readouterr().out
    record = json.loads((bc.path / "cell.json").read_text())
    record["config"]["seeds"] = 5
    (bc.path / "cell.json").write_text(json.dumps(record))
    assert cli.main(["store", "check", str(root)]) == 1
    assert "not the folder's name" in capsys.readouterr().out
    assert cli.main(["store", "check", str(tmp_path / "nope")]) == 2
    assert "is not a results store" in capsys.readouterr().err


def test_path_mistakes_are_one_line_errors(swept, tmp_path, capsys):
    """An existing file as --out or --store, or a store that cannot be written: one line naming
    the path, exit 2, no traceback, nothing written."""
    from offbench import cli

    spec = tmp_path / "tiny.toml"
    spec.write_text(to_toml(tiny_spec(algorithms=["bc"], sinks=[])))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["--out", str(afile)], ["--store", str(afile)]):
        assert cli.main(["sweep", str(spec), *(["--store", str(swept[0])] if args[0] == "--out"
                                               else []), *args]) == 2
        assert f"{args[0]} {afile} is a file; give a folder" in capsys.readouterr().err
    assert cli.main(["run", "bc", DATASET, *RUN_FLAGS, "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    assert afile.read_text() == "x"
    # a store the user may not write (as root every path is writable, so the refusal is the
    # operating system's answer, simulated)
    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(locked)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", mkdir)
        assert cli.main(["sweep", str(spec), "--store", str(locked / "store")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {locked / 'store'}" in err and "Traceback" not in err
    assert not locked.exists()


def test_a_bad_dataset_transform_fails_before_anything_is_written(env_root, tmp_path):
    spec = tiny_spec(algorithms=["bc"], datasets=[DATASET + "+episodes=2"])
    with pytest.raises(ValueError, match=re.escape("bad transform '+episodes=2'")):
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    assert not (tmp_path / "store").exists()


def test_a_spec_with_many_problems_is_one_error_listing_each(env_root, tmp_path):
    """Every problem of a spec at once, each with its field path, what was given and what is
    accepted; nothing written."""
    spec = tiny_spec(algorithms=["bc", "nope_algo"], datasets=[DATASET, "hopper-mediun"],
                     seeds=2.7, first_seed=-1, sinks=["mlflow"], backend="gpu", colour="red",
                     modes=["offline", "o2o2"], set=["hidden=a"],
                     budget={**BUDGET, "updates": "100", "upd": 3},
                     algorithms_set={"bc": {"set": ["lr=x"], "grid": {"zz": ["1"]}},
                                     "iql": {}},
                     report=[{"kind": "offlin"}], needs=3)
    with pytest.raises(sweep.SpecError) as caught:
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    message = str(caught.value)
    for expected in (
            "colour: unknown keys ['colour'] (given 'red')",
            "algorithms[1] = 'nope_algo': unknown algorithm 'nope_algo'",
            "datasets[1] = 'hopper-mediun': unknown dataset kind",
            "seeds = 2.7: expected a whole number >= 1",
            "first_seed = -1: expected a whole number >= 0",
            "sinks = ['mlflow']: unknown logging sinks ['mlflow']; valid: ['tensorboard'",
            "backend = 'gpu'; valid: ['mujoco', 'mjx']",
            "modes[1] = 'o2o2': mode 'o2o2' has no runner here; registered modes:",
            "set[0] = 'hidden=a': --set hidden=a: expected int",
            "algorithms_set.bc.set[0] = 'lr=x': --set lr=x: expected float",
            "algorithms_set.bc.grid.zz[0] = 'zz=1': unknown config key 'zz'",
            "algorithms_set.iql: names an algorithm not in 'algorithms'",
            "budget: unknown offline budget keys ['upd']; valid:",
            "budget: offline budget updates = '100': expected int",
            "report[0].kind: 'offlin' is not one of",
            "needs = 3: 'needs' must be a list of spec files"):
        assert f"\n  - {expected}" in message, (expected, message)
    assert len(caught.value.problems) == 16
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("dataset,message", [
    ("hopper-mediun", "unknown dataset kind in 'hopper-mediun'"),
    ("hoper-medium", "unknown dataset 'hoper-medium': it must start with a task"),
    ("test/hopper/missing-v0", "no Minari dataset 'test/hopper/missing-v0'"),
    ("hopper-medium@sim:gravty=0.5", "unknown override 'gravty'"),
])
def test_an_unknown_dataset_fails_before_anything_is_written(env_root, tmp_path, dataset,
                                                             message):
    """Before, an unknown dataset failed in its cell, leaving its folder in the store."""
    spec = tiny_spec(algorithms=["bc"], sinks=[], datasets=[DATASET, dataset],
                     modes=["offline", "o2o"] if "@" in dataset else ["offline"])
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    assert f"datasets[1] = '{dataset}'" in str(caught.value)
    assert not (tmp_path / "store").exists()


def test_a_dataset_a_mode_cannot_take_is_named_with_its_combination(env_root, tmp_path):
    spec = tiny_spec(algorithms=["bc"], sinks=[],
                     datasets=[DATASET, DATASET + "@sim:gravity=0.5"])
    with pytest.raises(sweep.SpecError, match=re.escape(
            f"datasets: '{DATASET}@sim:gravity=0.5' with bc in mode offline: ")):
        sweep.run_sweep(spec, store.Store(tmp_path / "store"), log=quiet)
    assert not (tmp_path / "store").exists()


def test_sweep_cli_names_every_spec_problem_in_one_error(env_root, tmp_path, capsys):
    """`offbench sweep` with a bad spec (and a bad spec it needs): exit 2, every problem of both
    named, no traceback, no store."""
    from offbench import cli

    (tmp_path / "other.toml").write_text(to_toml(tiny_spec(name="other", seeds=0)))
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(tiny_spec(algorithms=["bc"], seeds="two", sinks=["mlflow"],
                                      needs=["other.toml"])))
    root = tmp_path / "store"
    assert cli.main(["sweep", str(path), "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("offbench sweep: error: sweep spec 'tiny': 2 problem(s)")
    assert "seeds = 'two': expected a whole number >= 1" in err
    assert "unknown logging sinks ['mlflow']" in err
    assert "Traceback" not in err and not root.exists()
    path.write_text(to_toml(tiny_spec(algorithms=["bc"], sinks=[], needs=["other.toml"])))
    assert cli.main(["sweep", str(path), "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert "sweep spec 'other'" in err and "seeds = 0: expected a whole number >= 1" in err
    assert not root.exists()
