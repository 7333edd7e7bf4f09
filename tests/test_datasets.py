"""Datasets: behaviour-policy selection, reproducible Minari builds, the loader and its checks,
derived fields and statistics. Tiny sizes: the behaviour policies here come from a few thousand
SAC steps trained in the test itself, so the tests do not depend on the committed ones."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import offbench
from offbench import data, envs, policies
from offbench.data import builder as data_build
from offbench.data import loader as data_load
from offbench.data import stats
from offbench.loops import online
from offbench_baselines import sac

OFFBENCH = str(Path(sys.executable).parent / "offbench")
SIZE = 3000  # transitions per tiny dataset


@pytest.fixture(scope="module")
def tiny_policies(tmp_path_factory):
    """Behaviour policies for hopper from a 3k-step SAC run, selected into a temporary
    tasks/policies (10 reference episodes instead of 100)."""
    root = tmp_path_factory.mktemp("policies")
    run = root / "runs" / "hopper"
    config = online.OnlineConfig(env_steps=3000, warmup_steps=1000, eval_every=500,
                                 eval_episodes=2, checkpoint_every=3000, backend="mujoco")
    online.train("sac", "hopper", 1, config, sac.Config(hidden=(32, 32), batch_size=64), run,
                 progress=False, snapshot=sac.policy_params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(policies, "POLICIES_DIR", root / "tasks" / "policies")
        mp.setattr(policies, "REFERENCE_EPISODES", 10)
        mp.setattr(policies, "SELECTION_EPISODES", 4)
        out = root / "tasks" / "policies" / "hopper"
        mp.setattr(policies, "record", lambda: {  # taken before select writes anything
            "git_commit": "after" if list(out.glob("*.msgpack")) else "before"})
        policies.manifest.cache_clear()
        info = policies.select("hopper", run, log=lambda *_: None)
        yield info
    policies.manifest.cache_clear()


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_selection_follows_the_d4rl_definitions(tiny_policies):
    info = tiny_policies
    assert info["selected_by"]["git_commit"] == "before"
    entries = info["policies"]
    assert {"expert", "medium"} <= set(entries)
    assert entries["expert"]["period"] > entries["medium"]["period"] or \
        entries["expert"]["period"] == entries["medium"]["period"] == 0
    ref = info["reference_scores"]
    assert ref["ref_max"] == pytest.approx(entries["expert"]["return_mean"])
    assert entries["expert"]["normalized"] == pytest.approx(100.0)
    # replay sets are in training order and end at medium / expert
    for kind, last in (("medium-replay", "medium"), ("full-replay", "expert")):
        names = info["replay_policies"][kind]
        assert names[-1] == last
        periods = [entries[n]["period"] for n in names]
        assert periods == sorted(periods) and periods[0] == 0
    for entry in entries.values():  # files match their recorded hashes
        data_bytes = (policies.policy_dir("hopper") / entry["file"]).read_bytes()
        assert hashlib.sha256(data_bytes).hexdigest() == entry["sha256"]


def test_policy_checksum_mismatch_is_refused(tiny_policies, tmp_path, monkeypatch):
    copy = tmp_path / "policies"
    import shutil

    shutil.copytree(policies.POLICIES_DIR, copy)
    monkeypatch.setattr(policies, "POLICIES_DIR", copy)
    policies.manifest.cache_clear()
    path = copy / "hopper" / "expert.msgpack"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match its sha256"):
        policies.load_policy("hopper", "expert")
    policies.manifest.cache_clear()


def test_build_twice_gives_identical_bytes_and_minari_reads_it(tiny_policies, tmp_path):
    name = data.DatasetName("hopper", "medium-replay", SIZE)
    first = data.build(name, root=tmp_path / "a", log=lambda *_: None)
    second = data.build(name, root=tmp_path / "b", log=lambda *_: None)
    files_a, files_b = _files(first), _files(second)
    assert files_a.keys() == files_b.keys()
    assert files_a == files_b
    sidecar = json.loads(files_a[data_build.SIDECAR])
    for rel, digest in sidecar["sha256"].items():
        assert hashlib.sha256(files_a[rel]).hexdigest() == digest
    # what it was made from and by: each policy's checksum as committed, command, version
    manifest = policies.manifest("hopper")
    assert set(sidecar["policies_sha256"]) == set(manifest["replay_policies"]["medium-replay"])
    for policy, digest in sidecar["policies_sha256"].items():
        assert digest == manifest["policies"][policy]["sha256"]
    assert sidecar["command"] and sidecar["git_commit"] and sidecar["seed"] == 0
    assert sidecar["version"] == offbench.__version__
    assert sidecar["transitions"] == SIZE

    import minari

    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "a")
    try:
        dataset = minari.load_dataset(name.minari_id)
        assert dataset.total_steps == SIZE
        assert dataset.spec.env_spec.id == "Hopper-v5"
        ref_min, ref_max = policies.reference_scores("hopper")
        assert dataset.storage.metadata["ref_min_score"] == pytest.approx(ref_min)
        assert dataset.storage.metadata["ref_max_score"] == pytest.approx(ref_max)
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


def test_a_dataset_of_replaced_policies_is_rebuilt(tiny_policies, tmp_path, monkeypatch):
    name = data.DatasetName("hopper", "medium", SIZE)
    logs: list[str] = []
    path = data.build(name, root=tmp_path, log=logs.append)
    # while generating: what is made, then a line per dataset part before its rollouts
    assert "generating" in logs[0] and "episodes ->" in logs[-1], logs
    assert [line.split(":")[0] for line in logs[1:-1]] == ["  medium"], logs
    assert "envs x" in logs[1] and "(medium)" in logs[1]
    data.build(name, root=tmp_path, log=logs.append)
    assert "already built" in logs[-1]
    # the medium policy re-selected since: tasks/policies records another checksum
    monkeypatch.setattr(data_build, "policy_hashes", lambda task, kind: {"medium": "0" * 64})
    logs.clear()
    assert data.build(name, root=tmp_path, log=logs.append) == path
    assert "built from other behaviour policies" in logs[0] and "rebuilding" in logs[0]
    assert "episodes ->" in logs[-1]  # generated anew, and complete
    assert json.loads((path / data_build.SIDECAR).read_text())["transitions"] == SIZE


def test_a_random_dataset_is_rebuilt_when_the_reference_scores_change(tiny_policies, tmp_path,
                                                                       monkeypatch):
    # no behaviour policy, but its metadata normalizes scores with the expert's return
    name = data.DatasetName("hopper", "random", SIZE)
    logs: list[str] = []
    path = data.build(name, root=tmp_path, log=logs.append)
    ref_min, ref_max = policies.reference_scores("hopper")
    monkeypatch.setattr(policies, "reference_scores", lambda task: (ref_min, ref_max + 1.0))
    logs.clear()
    assert data.build(name, root=tmp_path, log=logs.append) == path
    assert "reference scores" in logs[0] and "rebuilding" in logs[0]
    sidecar = json.loads((path / data_build.SIDECAR).read_text())
    assert sidecar["reference_scores"] == {"ref_min": ref_min, "ref_max": ref_max + 1.0}
    assert data.load(name.short, root=tmp_path).metadata["ref_max"] == ref_max + 1.0


def test_every_field_round_trips(tiny_policies, tmp_path):
    episodes, _ = data_build.generate("hopper", "medium", SIZE, seed=3, log=lambda *_: None)
    data_build.write_minari(tmp_path, "test/hopper/roundtrip-v0", episodes, "hopper",
                            {"ref_min_score": 0.0, "ref_max_score": 1.0})
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        loaded = data.load("test/hopper/roundtrip-v0")
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    flat_obs = np.concatenate([ep["observations"][:-1] for ep in episodes])
    flat_next = np.concatenate([ep["observations"][1:] for ep in episodes])
    np.testing.assert_array_equal(np.asarray(loaded.observations), flat_obs)
    np.testing.assert_array_equal(np.asarray(loaded.next_observations), flat_next)
    np.testing.assert_array_equal(np.asarray(loaded.actions),
                                  np.concatenate([ep["actions"] for ep in episodes]))
    np.testing.assert_array_equal(np.asarray(loaded.rewards),
                                  np.concatenate([ep["rewards"] for ep in episodes]))
    np.testing.assert_array_equal(np.asarray(loaded.terminals),
                                  np.concatenate([ep["terminations"] for ep in episodes]))
    np.testing.assert_array_equal(np.asarray(loaded.timeouts),
                                  np.concatenate([ep["truncations"] for ep in episodes]))
    assert loaded.task == "hopper" and loaded.size == SIZE
    # every episode ends exactly once, by termination or truncation
    ends = np.asarray(loaded.terminals) + np.asarray(loaded.timeouts)
    assert ends.max() == 1 and ends.sum() == len(episodes)


def test_mc_returns_and_next_actions_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    lengths = np.array([3, 2])
    # episode 1: 1 + .5*2 + .25*3 = 2.75, 2 + .5*3 = 3.5, 3; episode 2: 4 + .5*5 = 6.5, 5
    np.testing.assert_allclose(data_load.mc_returns(rewards, lengths, 0.5),
                               [2.75, 3.5, 3.0, 6.5, 5.0])
    actions = np.arange(5, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(data_load.next_actions(actions, lengths)[:, 0],
                                  [1, 2, 2, 4, 4])


def test_derived_fields_on_a_built_dataset(tiny_policies, tmp_path):
    root = tmp_path / "d"
    data.build(data.DatasetName("hopper", "random", SIZE), root=root, log=lambda *_: None)
    ds = data.load("hopper-random-3k", root, derived=("mc_returns", "next_actions", "obs_mean"),
                   discount=0.9)
    lengths = ds.metadata["episode_lengths"]
    first = slice(0, int(lengths[0]))
    rewards = np.asarray(ds.rewards)[first].astype(np.float64)
    expected = [sum(0.9 ** k * r for k, r in enumerate(rewards[t:])) for t in range(len(rewards))]
    np.testing.assert_allclose(np.asarray(ds.extra["mc_returns"])[first], expected, rtol=1e-5)
    np.testing.assert_allclose(ds.extra["obs_mean"], np.asarray(ds.observations).mean(0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(data.DatasetError, match="unknown derived fields"):
        data.load("hopper-random-3k", root, derived=("returns_to_go",))


def _mean_and_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


@pytest.mark.parametrize("kind,policy", [("random", None), ("expert", "expert")])
def test_random_scores_zero_and_expert_one_hundred(tiny_policies, tmp_path, kind, policy):
    """The dataset's whole-episode returns match the reference they define, within 4 standard
    errors of the two independent estimates (dataset episodes and the reference's episodes)."""
    size = 5000
    data.build(data.DatasetName("hopper", kind, size), root=tmp_path, log=lambda *_: None)
    ds = data.load(f"hopper-{kind}-5k", tmp_path)
    lengths = ds.metadata["episode_lengths"]
    returns = stats.episode_returns(np.asarray(ds.rewards), lengths)
    whole = stats.whole_episodes(np.asarray(ds.terminals), lengths, 1000)
    mean, se = _mean_and_se(returns[whole])
    ref = tiny_policies["reference_scores"]
    ref_mean = ref["ref_min"] if policy is None else ref["ref_max"]
    ref_std = ref["ref_min_std"] if policy is None else ref["ref_max_std"]
    ref_se = ref_std / np.sqrt(ref["episodes"] - 1)
    assert abs(mean - ref_mean) <= 4 * np.hypot(se, ref_se) + 1e-6
    summary = stats.summary(np.asarray(ds.rewards), np.asarray(ds.terminals), lengths,
                            ref["ref_min"], ref["ref_max"], 1000)
    span = ref["ref_max"] - ref["ref_min"]
    target = 0.0 if policy is None else 100.0
    assert abs(summary["normalized"] - target) <= 100 * 4 * np.hypot(se, ref_se) / span + 1e-6


def _corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        flipped = bytearray(raw)
        flipped[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_dataset_file_is_refused(tiny_policies, tmp_path, how):
    root = tmp_path / "d"
    path = data.build(data.DatasetName("hopper", "random", SIZE), root=root,
                      log=lambda *_: None)
    _corrupt(path / "data" / "main_data.hdf5", how)
    with pytest.raises(data.DatasetError, match="checksum mismatch"):
        data.load("hopper-random-3k", root)
    if how == "truncate":  # without the checksum, the reader itself must still refuse it
        with pytest.raises(data.DatasetError, match="truncated or corrupted"):
            data.load("hopper-random-3k", root, verify=False)


def _foreign(root: Path, dataset_id: str, task: str, edit=None) -> None:
    episodes, _ = data_build.generate(task, "random", 600, seed=0, log=lambda *_: None)
    if edit:
        edit(episodes)
    data_build.write_minari(root, dataset_id, episodes, task, {})


def test_nan_and_inf_fields_are_refused(tmp_path, monkeypatch):
    def poison(episodes):
        episodes[1]["rewards"] = episodes[1]["rewards"].copy()
        episodes[1]["rewards"][3] = np.nan
        episodes[2]["observations"] = episodes[2]["observations"].copy()
        episodes[2]["observations"][0, 0] = np.inf

    _foreign(tmp_path, "test/hopper/nan-v0", "hopper", poison)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(data.DatasetError, match="NaN/Inf"):
        data.load("test/hopper/nan-v0")


def test_observation_size_must_match_the_task(tmp_path, monkeypatch):
    _foreign(tmp_path, "test/halfcheetah/small-v0", "halfcheetah")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert data.load("test/halfcheetah/small-v0").task == "halfcheetah"
    with pytest.raises(data.DatasetError, match="17 features but task 'hopper' has 11"):
        data.load("test/halfcheetah/small-v0", task="hopper")


def test_unknown_ids_name_the_valid_choices(tmp_path):
    with pytest.raises(data.DatasetError, match="valid kinds are random, medium"):
        data.load("hopper-mediocre", tmp_path)
    with pytest.raises(data.DatasetError, match="must start with a task"):
        data.load("pendulum-medium", tmp_path)
    with pytest.raises(data.DatasetError, match="is not built .*offbench datasets build "
                                                "hopper-expert"):
        data.load("hopper-expert", tmp_path)
    with pytest.raises(data.DatasetError, match="minari download"):
        data.load("mujoco/hopper/nothing-v0", tmp_path)


def test_interrupted_build_leaves_nothing_and_keeps_the_old_dataset(tiny_policies, tmp_path,
                                                                      monkeypatch):
    root = tmp_path / "d"
    name = data.DatasetName("hopper", "random", SIZE)
    path = data.build(name, root=root, log=lambda *_: None)
    before = _files(path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped after the data files are written

    monkeypatch.setattr(data_build, "_copy_namespace_metadata", killed)
    with pytest.raises(KeyboardInterrupt):
        data.build(name, seed=1, root=root, force=True, log=lambda *_: None)
    assert _files(path) == before  # the complete dataset is untouched
    assert not list(root.glob(".staging-*"))
    other = data.DatasetName("hopper", "medium", SIZE)
    with pytest.raises(KeyboardInterrupt):
        data.build(other, root=root, log=lambda *_: None)
    assert not other.path(root).exists()
    with pytest.raises(data.DatasetError, match="not built"):
        data.load(other.short, root)


def test_a_folder_without_the_build_record_is_refused(tiny_policies, tmp_path):
    root = tmp_path / "d"
    path = data.build(data.DatasetName("hopper", "random", SIZE), root=root,
                      log=lambda *_: None)
    (path / data_build.SIDECAR).unlink()
    with pytest.raises(data.DatasetError, match="incomplete or foreign build"):
        data.load("hopper-random-3k", root)


def test_minari_datasets_made_elsewhere_open_on_our_task(tmp_path, monkeypatch):
    """A dataset recorded by Minari's own DataCollector on Gymnasium's Hopper-v5."""
    import gymnasium as gym
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = minari.DataCollector(gym.make("Hopper-v5"))
    obs_log, act_log = [], []
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        for _ in range(40):
            action = env.action_space.sample()
            obs_log.append(obs)
            act_log.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.create_dataset("elsewhere/hopper/tiny-v0", algorithm_name="random", author="test",
                       author_email="test", code_permalink="none")
    ds = data.load("elsewhere/hopper/tiny-v0")
    assert ds.task == "hopper" and not ds.metadata["ours"]
    np.testing.assert_allclose(np.asarray(ds.observations), np.array(obs_log, np.float32))
    np.testing.assert_allclose(np.asarray(ds.actions), np.array(act_log, np.float32))


def test_ids_round_trip():
    name = data.parse("hopper-medium-replay-100k")
    assert (name.task, name.kind, name.size) == ("hopper", "medium-replay", 100_000)
    assert name.minari_id == "offbench/hopper/medium-replay-100k-v0"
    assert data.parse(name.minari_id) == name
    default = data.parse("ant-expert")
    assert default.size == 1_000_000 and default.minari_id == "offbench/ant/expert-v0"
    assert data.parse("ant-expert", size=2000).short == "ant-expert-2k"


def test_tq_and_saco_by_hand():
    rewards = np.array([1.0, 1.0, 5.0, 2.0], np.float32)
    lengths = np.array([2, 1, 1])
    terminals = np.array([0, 1, 1, 0], np.float32)  # the last episode is cut short
    out = stats.summary(rewards, terminals, lengths, ref_min=0.0, ref_max=10.0, time_limit=1000)
    # whole episodes: [1, 1] (terminated) -> 2, [5] (terminated) -> 5; mean 3.5
    assert out["return_mean"] == 3.5 and out["tq"] == pytest.approx(0.35)
    assert out["whole_episodes"] == 2 and out["episodes"] == 3
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(500, 4)), rng.uniform(-1, 1, (500, 2))
    assert stats.saco(obs, act, obs, act) == 1.0
    assert stats.saco(obs[:1].repeat(500, 0), act[:1].repeat(500, 0), obs, act) == \
        pytest.approx(1 / stats._cells(obs, act, *_standardizer(obs, act)))
    assert stats.saco(obs[:100], act[:100], obs, act) < 1.0


def _standardizer(obs, act):
    ref = np.concatenate([obs, act], axis=1)
    return ref.mean(0), ref.std(0) + 1e-6


def test_cli_reports_bad_ids_in_one_line(tmp_path):
    proc = subprocess.run([OFFBENCH, "datasets", "build", "hopper-mediocre", "--root",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "valid kinds are" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([OFFBENCH, "datasets", "info", "hopper-expert-2k", "--root",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not built" in proc.stderr


def test_builds_are_deterministic_in_the_seed_only(tiny_policies, tmp_path):
    a = data_build.generate("hopper", "full-replay", 1000, seed=0, log=lambda *_: None)[0]
    b = data_build.generate("hopper", "full-replay", 1000, seed=1, log=lambda *_: None)[0]
    assert not np.array_equal(a[0]["actions"], b[0]["actions"])


def makefile_and_committed_policies() -> tuple[str, dict[str, dict]]:
    """The Makefile's text and task -> the committed tasks/policies/TASK/policies.json (the
    folders `make policies` trains: one per locomotion task; tasks/policies/ant-nav holds the
    policy trained on the waypoint task, chosen by offbench/data/antmaze.py)."""
    root = Path(__file__).resolve().parents[1]
    committed = {}
    for path in (root / "tasks" / "policies").glob("*/policies.json"):
        record = json.loads(path.read_text())
        task = record["training_run"]["settings"]["task"]  # ant-nav: ant-waypoint
        assert path.parent.name in (task, "ant-nav"), path
        committed[task] = record
    return (root / "Makefile").read_text(), committed


def test_make_policies_retrains_the_committed_widths():
    # `make policies` must reproduce what tasks/policies/ holds: each task's network width in
    # the Makefile equals the one its committed policies record (and were trained with)
    makefile, committed = makefile_and_committed_policies()
    widths = dict(re.findall(r"^POLICY_HIDDEN_([\w-]+) \?= ([\d,]+)$", makefile, re.M))
    assert committed and set(widths) == set(committed)
    for task, record in committed.items():
        hidden = [int(h) for h in widths[task].split(",")]
        assert hidden == record["hidden"], task
        trained = record["training_run"]["settings"]["algo_config"]["hidden"]
        assert trained == record["hidden"], task


def test_make_policies_trains_each_task_as_long_as_its_committed_run():
    # a run stopped short on purpose (training_run.stopped_early) is reproduced by training
    # that long (POLICY_STEPS_<task>); every other task trains its planned length
    makefile, committed = makefile_and_committed_policies()
    default = int(re.search(r"^POLICY_STEPS \?= (\d+)$", makefile, re.M).group(1))
    per_task = {t: int(n) for t, n in re.findall(r"^POLICY_STEPS_([\w-]+) \?= (\d+)$", makefile,
                                                  re.M)}
    for task, record in committed.items():
        run = record["training_run"]
        steps = per_task.get(task, default)
        if "stopped_early" in run:
            assert steps == run["trained_env_steps"] == run["stopped_early"]["env_steps"]
            assert run["stopped_early"]["reason"]
        else:
            assert steps == run["trained_env_steps"] == run["target_env_steps"], task


def test_training_record_keeps_a_stopped_early_note_only_for_the_same_run(tmp_path):
    # the note is written by hand: selecting again from the run it describes keeps it; a new
    # run (another run.json) or a run trained to another length drops it
    run = tmp_path / "run"
    run.mkdir()
    run_json = {"algorithm": "sac", "started": "2026-12-06T05:00"}
    (run / "run.json").write_text(json.dumps(run_json))
    settings = {"online_config": {"env_steps": 1000000}}
    note = {"env_steps": 500000, "reason": "levelled off"}
    previous = tmp_path / "policies.json"

    def run_json_of(folder):  # what both selects pass: the run's run.json as read
        return json.loads((folder / "run.json").read_text())

    def select_again(old_run_json: dict, steps: int) -> dict:
        previous.write_text(json.dumps(
            {"training_run": {"run_json": old_run_json, "stopped_early": note}}))
        return policies.training_record(settings, steps, run_json_of(run), previous)

    kept = select_again(run_json, 500000)
    assert kept["stopped_early"] == note
    assert (kept["trained_env_steps"], kept["target_env_steps"]) == (500000, 1000000)
    assert kept["run_json"] == run_json
    assert "stopped_early" not in select_again({**run_json, "started": "later"}, 500000)
    assert "stopped_early" not in select_again(run_json, 600000)
    assert "stopped_early" not in policies.training_record(settings, 500000, run_json_of(run),
                                                           tmp_path / "none.json")


def test_physics_states_leave_the_transitions_byte_identical(tmp_path, monkeypatch):
    """Builds store each transition's start physics state (data/qpos.npy, data/qvel.npy) and
    their sha256 (physics_sha256): main_data.hdf5 is byte for byte what the code path without
    them (rollout.collect without `physics`, the program every build ran before) writes; a
    dataset built without them is kept by `build` (said in the log) and `--force` adds them;
    the loader gives `physics` (qpos ++ qvel, row-aligned: the task's observation of it is
    the stored observation) only when asked, for a base dataset that carries it, not for a
    variant or an old build; a damaged file is refused. Several collection streams, so the
    rows are cut into episodes across env boundaries."""
    from offbench.loops import rollout

    monkeypatch.setattr(data_build, "STEPS_PER_ENV", 500)  # 6 envs x 500 steps
    # the module's tiny_policies fixture, when it ran, points tasks/policies at a hopper-only
    # folder: a random dataset needs only reference scores
    monkeypatch.setattr(policies, "reference_scores", lambda task: (0.0, 1000.0))
    quiet = lambda *_: None  # noqa: E731
    name = data.DatasetName("walker2d", "random", SIZE)
    new = data.build(name, root=tmp_path / "new", log=quiet)
    sidecar = json.loads((new / data_build.SIDECAR).read_text())
    assert set(sidecar["physics_sha256"]) == set(data_build.PHYSICS_FILES.values())
    for rel, digest in sidecar["physics_sha256"].items():
        assert hashlib.sha256((new / rel).read_bytes()).hexdigest() == digest
    collect = rollout.collect
    with monkeypatch.context() as mp:  # the code path before physics states were collected
        mp.setattr(rollout, "collect", lambda *a, physics=False, **k: collect(*a, **k))
        old = data.build(name, root=tmp_path / "old", log=quiet)
    main = data_build.DATA_FILES[0]
    assert (old / main).read_bytes() == (new / main).read_bytes()
    assert "physics_sha256" not in json.loads((old / data_build.SIDECAR).read_text())
    assert not (old / "data" / "qpos.npy").exists()

    ds = data.load(name.short, tmp_path / "new", derived=("physics",))
    physics = ds.extra["physics"]
    assert physics.shape == (SIZE, 9 + 9) and physics.dtype == np.float32
    env = envs.make("walker2d", wrap=False)
    np.testing.assert_array_equal(np.asarray(observation_of(env, physics)), ds.observations)
    nq = env.model.nq  # Walker2d's observations clip velocities at 10: such rows are there too
    assert (np.abs(physics[:, nq:]) > 10).any(1).sum() > 100
    assert "physics" not in data.load(name.short, tmp_path / "new").extra  # only when asked
    for dataset_id, root in ((name.short + "+episodes=0.5", tmp_path / "new"),
                             (name.short, tmp_path / "old")):
        loaded = data.load(dataset_id, root, derived=("physics",))
        assert "physics" not in loaded.extra and loaded.metadata["physics"]
    logs: list[str] = []
    assert data.build(name, root=tmp_path / "old", log=logs.append) == old
    assert "already built" in logs[0] and "without physics states" in logs[1] \
        and "--force" in logs[1]
    data.build(name, root=tmp_path / "old", force=True, log=quiet)
    assert _files(old).keys() == _files(new).keys()
    assert (old / main).read_bytes() == (new / main).read_bytes()
    assert (old / "data" / "qvel.npy").read_bytes() == (new / "data" / "qvel.npy").read_bytes()
    raw = bytearray((new / "data" / "qvel.npy").read_bytes())
    raw[-1] ^= 0xFF
    (new / "data" / "qvel.npy").write_bytes(bytes(raw))
    with pytest.raises(data.DatasetError, match="qvel.npy"):
        data.load(name.short, tmp_path / "new", derived=("physics",))
    data.load(name.short, tmp_path / "new")  # the transitions alone still load


def observation_of(env, physics: np.ndarray):
    """The task's observation of stored (qpos ++ qvel) rows, as a reset puts them."""
    import jax

    nq = env.model.nq
    states = jax.vmap(env.initial_physics)(physics[:, :nq], physics[:, nq:])
    return jax.vmap(env.observation)(states)
