"""AntMaze datasets (offbench/data/antmaze.py): the rotation that turns the ant's observation
towards its waypoint is an exact symmetry of the physics and of the observation, the steered
ant moves towards targets in every direction (and the unsteered one does not), the
controller's success in antmaze-umaze, choosing it among a waypoint run's snapshots,
byte-identical rebuilds, the relabeling to the evaluation goal, and the ids.
Tiny sizes only (the 1M-transition datasets are never built here)."""

import dataclasses
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_maze_datasets import _files  # a built dataset's files and their bytes

import offbench.envs as envs
from offbench import data
from offbench.data import antmaze, builder
from offbench.envs import waypoint

ID = "antmaze-umaze-2k"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("antmaze")
    quiet = {"log": lambda *_: None}
    return {"a": data.build(data.parse(ID), seed=0, root=root / "a", **quiet),
            "b": data.build(data.parse(ID), seed=0, root=root / "b", **quiet),
            "root": root / "a"}


@pytest.fixture(scope="module")
def running_ant():
    """An Ant-v5 (C backend) state after 40+ steps of the policy, mid-stride, with contacts."""
    env = envs.make("ant", "mujoco", wrap=False)
    hidden, params, _ = antmaze.load_nav_policy()
    state = env.reset(jax.random.key(0))
    heading = jnp.zeros(())
    for t in range(100):  # 40 steps, then on until a foot is on the ground
        if t >= 40 and float(jnp.abs(state.pipeline_state.cfrc_ext).max()) > 0.1:
            break
        action, heading = antmaze.steer(params, hidden, state.pipeline_state, heading,
                                        jnp.array([50.0, 0.0]), jax.random.key(t))
        state = env.step(state, action)
    return env, state


def test_heading_zero_is_the_ant_v5_observation_and_rotation_is_a_symmetry(running_ant):
    env, state = running_ant
    p = state.pipeline_state
    assert float(jnp.abs(p.cfrc_ext).max()) > 0.1  # feet on the ground: forces are rotated too
    np.testing.assert_array_equal(waypoint.heading_observation(p, jnp.zeros(())), state.obs)
    action = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, 8), jnp.float32)
    after = env.step(state, action).pipeline_state
    for angle in (0.7, 2.0, -2.5):
        rotated = waypoint.rotate_physics(p, jnp.float32(angle))
        # the same observation from the rotated state, seen along the rotated heading
        np.testing.assert_allclose(waypoint.heading_observation(rotated, jnp.float32(0.3 + angle)),
                                   waypoint.heading_observation(p, jnp.float32(0.3)), atol=1e-6)
        # the rotated state steps to the rotated next state (C backend, float64 inside)
        stepped = env.step(state.replace(pipeline_state=rotated), action).pipeline_state
        expected = waypoint.rotate_physics(after, jnp.float32(angle))
        for field in ("qpos", "qvel", "cfrc_ext"):
            np.testing.assert_allclose(getattr(stepped, field), getattr(expected, field),
                                       atol=1e-4, err_msg=field)
        # MuJoCo's free-joint angular velocity is in the body frame: rotating it as a world
        # vector breaks the symmetry
        wrong = rotated.replace(qvel=rotated.qvel.at[3:5].set(waypoint.rot2(p.qvel[3:5], angle)))
        stepped = env.step(state.replace(pipeline_state=wrong), action).pipeline_state
        assert float(jnp.max(jnp.abs(stepped.qvel - expected.qvel))) > 0.05


def test_the_steered_ant_moves_towards_targets_in_every_direction():
    """Invariant: on open ground, in 8 directions, the steered policy makes progress towards a
    target 20 m away in 60 steps (3 s from rest; measured 3.6-6.9 m, 4.4 m straight behind,
    where it first turns round), straying little sideways; unsteered (heading fixed at +x) it
    runs away from the target behind it."""
    env = envs.make("ant", "mujoco", wrap=False)
    hidden, params, _ = antmaze.load_nav_policy()
    angles = jnp.linspace(-jnp.pi, jnp.pi, 8, endpoint=False)
    direction = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)

    @jax.jit
    def run(steered):
        state = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 8))
        start = state.pipeline_state.qpos[:, :2]
        target = start + 20.0 * direction

        def body(carry, t):
            state, heading = carry
            act = jax.vmap(lambda p, h, g, k: antmaze.steer(params, hidden, p, h, g, k))
            goal = jnp.where(steered, target, start + jnp.array([20.0, 0.0]))
            action, heading = act(state.pipeline_state, heading, goal,
                                  jax.random.split(jax.random.key(t), 8))
            return (jax.vmap(env.step)(state, action), heading), None

        heading = jnp.where(steered, angles, 0.0)
        (state, _), _ = jax.lax.scan(body, (state, heading), jnp.arange(60))
        moved = state.pipeline_state.qpos[:, :2] - start
        along = jnp.sum(moved * direction, -1)
        across = jnp.abs(moved[:, 0] * direction[:, 1] - moved[:, 1] * direction[:, 0])
        return along, across

    along, across = jax.device_get(run(True))
    assert np.all(along > 2.0) and np.median(along) > 4.0, along
    assert np.all(across < along / 2 + 1.0), (along, across)
    along, _ = jax.device_get(run(False))
    assert along[0] < 0  # the target at -x: the unsteered ant runs away from it


def test_controller_reaches_the_umaze_goal_on_the_c_backend():
    """Invariant: from D4RL's umaze start to its goal (700 steps, no action noise), the
    controller succeeds in at least 70% of 32 episodes (measured 0.92 over 64; the rest
    flip over on a turn: tasks/policies/ant-nav/policies.json), and nearly every failure is
    a flip."""
    success, fell = antmaze.success_rate("antmaze-umaze", 32, jax.random.key(3))
    assert success >= 0.7 and success + fell >= 0.9, (success, fell)


def test_build_is_byte_identical_from_a_seed(built):
    files_a, files_b = _files(built["a"]), _files(built["b"])
    assert files_a == files_b
    record = json.loads(files_a[builder.SIDECAR])
    for rel, digest in record["sha256"].items():
        assert hashlib.sha256(files_a[rel]).hexdigest() == digest
    assert record["transitions"] == 2000 and record["kind"] == "play"
    assert record["policies_sha256"] == antmaze.policy_hashes()
    assert record["behaviour"]["noise"] == 0.2 and record["behaviour"]["episode_steps"] == 1000


def test_rewards_and_ends_are_relabeled_to_the_evaluation_goal(built):
    """Goals in the observations are draws around the evaluation goal, constant within an
    episode; reward 1 exactly on the steps whose next position (recorded by the stream) is
    within the goal radius of the episode's goal, and those end their episodes."""
    ds = data.load(ID, built["root"])
    lengths = ds.metadata["episode_lengths"]
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    goals = ds.observations[:, -2:]
    centre, noise = antmaze.maze2d.eval_goal("antmaze-umaze")
    assert np.all(np.abs(goals - centre) <= noise + 1e-5)
    for s, n in zip(starts, lengths, strict=True):
        assert np.all(goals[s:s + n] == goals[s])
        assert np.all(ds.next_observations[s:s + n, -2:] == goals[s])
    assert np.all(ds.terminals >= ds.rewards)  # a success ends its episode
    ends = starts + lengths - 1
    inner = np.setdiff1d(np.arange(len(ds.rewards)), ends)
    assert np.all(ds.rewards[inner] == 0) and np.all(ds.terminals[inner] == 0)
    # the stream itself: the same relabeling from its recorded positions
    stream = antmaze.stream("antmaze-umaze", "play", 2000, antmaze.dataset_key(0, "play"))
    relabeled = antmaze.relabel("antmaze-umaze", "play", stream, 0)
    np.testing.assert_array_equal(relabeled["actions"][0], ds.actions)
    np.testing.assert_array_equal(relabeled["rewards"][0], ds.rewards)
    position, goal = stream["positions"][0], relabeled["observations"][0, :, -2:]
    within = np.sqrt(np.sum((position - goal) ** 2, axis=1)) <= np.float32(0.45)
    np.testing.assert_array_equal(within.astype(np.float32), ds.rewards)
    # collection episodes: 1000 steps (a timeout), or shorter when the ant flipped over (a
    # termination without reward, kept by the relabeling); the data's controller seldom flips
    # in 2000 steps, so a noisier one (action noise 1.0) makes the flips
    noisy = antmaze.stream("antmaze-umaze", "play", 2000, antmaze.dataset_key(0, "play"),
                           dataclasses.replace(antmaze.NAV, noise=1.0))
    flips = np.flatnonzero(noisy["terminals"][0])
    noisy_ends = np.flatnonzero((noisy["timeouts"][0] + noisy["terminals"][0]) > 0)
    assert len(flips) >= 1 and np.all(np.diff(np.r_[-1, noisy_ends]) <= antmaze.EPISODE_STEPS)
    assert np.all(np.diff(np.r_[-1, noisy_ends])[np.isin(noisy_ends, flips)]
                  < antmaze.EPISODE_STEPS)
    noisy = antmaze.relabel("antmaze-umaze", "play", noisy, 0)
    np.testing.assert_array_equal(noisy["terminals"][0, flips], 1.0)
    ends = np.flatnonzero((stream["timeouts"][0] + stream["terminals"][0]) > 0)
    assert np.all(np.diff(np.r_[-1, ends]) <= antmaze.EPISODE_STEPS)
    stats = antmaze.collection_success(ds.rewards, ds.terminals, lengths)
    pieces = [(a + 1, b + 1) for a, b in zip(np.r_[-1, ends], np.r_[ends, len(ds.rewards) - 1],
                                             strict=True) if b > a]
    assert stats["collection_episodes"] == len(pieces)
    reached = [ds.rewards[a:b].any() for a, b in pieces]
    assert stats["reached_eval_goal"] == pytest.approx(np.mean(reached))


def test_ids():
    expected = {"antmaze-umaze": ("antmaze-umaze", "play"),
                "antmaze-umaze-diverse": ("antmaze-umaze", "diverse"),
                "antmaze-medium-play": ("antmaze-medium", "play"),
                "antmaze-medium-diverse": ("antmaze-medium", "diverse"),
                "antmaze-large-play": ("antmaze-large", "play"),
                "antmaze-large-diverse-100k": ("antmaze-large", "diverse")}
    for short, (task, kind) in expected.items():
        name = data.parse(short)
        assert (name.task, name.kind) == (task, kind) and name.short == short
        assert data.parse(name.minari_id) == name
    assert data.parse("antmaze-umaze-100k").minari_id == "offbench/antmaze-umaze/play-100k-v0"
    with pytest.raises(ValueError, match="valid kinds are play, diverse"):
        data.parse("antmaze-medium")
    assert antmaze.kind_goals("antmaze-umaze", "play") == "eval"
    assert antmaze.kind_goals("antmaze-medium", "play") == "diverse"
    assert antmaze.kind_goals("antmaze-large", "diverse") == "any"


def test_select_commits_the_best_snapshot_of_a_waypoint_run(tmp_path, monkeypatch):
    """`offbench policies select ant-waypoint`: the candidates are the last snapshot and every
    5th period before it; on a tie (random actors never succeed) the later one; the chosen
    snapshot's bytes become nav.msgpack with its sha256; the provenance is taken before
    anything is written (so its own output does not mark the commit dirty) and handed to
    `measure`; the record's stopped_early note about this same run is kept; a run on another
    task is refused."""
    from flax import serialization

    import offbench.provenance
    from offbench.networks import TanhGaussianActor

    run = tmp_path / "run"
    folder = run / "snapshots" / "seed0"
    folder.mkdir(parents=True)
    actor = TanhGaussianActor((8,), 8)
    for period in range(7):
        params = actor.init(jax.random.key(period), jnp.zeros(105))
        (folder / f"period_{period:05d}.msgpack").write_bytes(
            serialization.msgpack_serialize(serialization.to_state_dict(params)))
    settings = {"algorithm": "sac", "task": "ant-waypoint",
                "online_config": {"eval_every": 10000, "env_steps": 70000},
                "algo_config": {"hidden": [8]}}
    (run / "run.json").write_text(json.dumps(settings))
    monkeypatch.setattr(antmaze, "POLICY_DIR", tmp_path / "out")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(antmaze, "SELECT_TASKS", ("antmaze-umaze",))
    monkeypatch.setattr(antmaze, "SELECT_EPISODES", 2)
    monkeypatch.setattr(antmaze, "measure", lambda command, log, made: (command, made))
    monkeypatch.setattr(offbench.provenance, "record", lambda: {
        "git_commit": "after" if (tmp_path / "out" / "nav.msgpack").exists() else "before"})
    note = {"env_steps": 70000, "reason": "levelled off"}
    (tmp_path / "out" / "policies.json").write_text(json.dumps(
        {"training_run": {"run_json": settings, "stopped_early": note}}))
    antmaze.manifest.cache_clear()
    try:
        assert antmaze.select(run, command="cmd", log=lambda *_: None) == (
            "cmd", {"git_commit": "before"})
        info = json.loads((tmp_path / "out" / "policies.json").read_text())
    finally:
        antmaze.manifest.cache_clear()
    assert info["selected_by"]["git_commit"] == "before"
    assert info["training_run"]["stopped_early"] == note
    assert sorted(info["candidates"]) == ["1", "6"]
    chosen = (folder / "period_00006.msgpack").read_bytes()
    assert (tmp_path / "out" / "nav.msgpack").read_bytes() == chosen
    assert info["policies"]["nav"]["sha256"] == hashlib.sha256(chosen).hexdigest()
    assert info["policies"]["nav"]["env_steps"] == 70000
    assert info["training_run"]["trained_env_steps"] == 70000
    settings["task"] = "ant"
    (run / "run.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="comes from the waypoint task"):
        antmaze.select(run, command="cmd", log=lambda *_: None)
