"""PointMaze (maze2d) datasets: the shortest-path planner against a hand-traced path, the
waypoint controller's success on the C backend (with a control that must fail), byte-identical
rebuilds, every transition replayed through the env, ids and success-based reference scores;
the `fixed` kind (relabeled to the evaluation goal): the same states and actions, goals drawn
around the evaluation goal cell, rewards and ends recomputed from positions.
Tiny sizes only (the 1M-transition datasets are never built here)."""

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs
from offbench import data, policies
from offbench.data import builder, maze2d
from offbench.envs.maze import cell_xy
from offbench.score import normalized_score

SIZE = 2000
ID = "pointmaze-umaze-2k"
FIXED = "pointmaze-umaze-fixed-2k"
UMAZE = ("#####",
         "#...#",
         "###.#",
         "#...#",
         "#####")


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same tiny dataset built twice with seed 0 and once with seed 1."""
    root = tmp_path_factory.mktemp("maze2d")
    name = data.parse(ID)
    quiet = {"log": lambda *_: None}
    fixed = data.parse(FIXED)
    return {"a": data.build(name, seed=0, root=root / "a", **quiet),
            "b": data.build(name, seed=0, root=root / "b", **quiet),
            "other": data.build(name, seed=1, root=root / "c", **quiet), "root": root / "a",
            "fixed_a": data.build(fixed, seed=0, root=root / "a", **quiet),
            "fixed_b": data.build(fixed, seed=0, root=root / "b", **quiet)}


def test_planner_follows_the_shortest_path_around_the_u():
    hops = maze2d.next_hops(UMAZE)
    width = len(UMAZE[0])
    cell, goal, path = 1 * width + 1, 3 * width + 1, []
    while cell != goal:
        cell = int(hops[cell, goal])
        path.append(divmod(cell, width))
    # traced by hand: along the top row, down the right column, back along the bottom row
    assert path == [(1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    assert hops[goal, goal] == goal and hops[0, goal] == 0  # at the goal / a wall: stays
    # the controller's cell lookup agrees with the env's geometry
    maze = maze2d.Maze.of(envs.make("pointmaze-umaze", "mujoco", wrap=False, goals="any"))
    for i, j in ((1, 1), (2, 3), (3, 2)):
        assert int(maze.cell(jnp.asarray(cell_xy(UMAZE, 1.0, (i, j)) + 0.3))) == i * width + j


def test_controller_reaches_goals_on_the_c_backend():
    """Invariant: the noiseless controller reaches D4RL's evaluation goal in at least 95% of
    64 episodes of every PointMaze task within its time limit (measured: 100% of 200), and
    with the datasets' action noise, at least 90% on the largest maze from random goals. A
    controller without the planner's gains (noise only) must not pass the same bar."""
    key = jax.random.key(3)
    for task in ("pointmaze-umaze", "pointmaze-medium", "pointmaze-large"):
        assert maze2d.success_rate(task, 64, key) >= 0.95, task
    assert maze2d.success_rate("pointmaze-large", 64, key, noise=True, goals="any") >= 0.9
    blind = dataclasses.replace(maze2d.CONTROLLER, p_gain=0.0, d_gain=0.0)
    assert maze2d.success_rate("pointmaze-large", 64, key, noise=True, ctrl=blind) < 0.5


def test_build_is_byte_identical_from_a_seed_and_differs_with_another(built):
    files_a, files_b = _files(built["a"]), _files(built["b"])
    assert files_a == files_b
    record = json.loads(files_a[builder.SIDECAR])
    for rel, digest in record["sha256"].items():
        assert hashlib.sha256(files_a[rel]).hexdigest() == digest
    other = json.loads((built["other"] / builder.SIDECAR).read_text())
    assert other["sha256"]["data/main_data.hdf5"] != record["sha256"]["data/main_data.hdf5"]
    assert record["transitions"] == SIZE and record["kind"] == "maze2d"
    assert record["behaviour"]["noise"] == 0.5 and record["policies_sha256"] == {}


def test_transitions_replay_through_the_env(built):
    """Every recorded action, stepped from the first recorded state with each episode's goal,
    gives the recorded next observations, rewards and ends, bit for bit; episodes chain without
    resets, goals change only between episodes, and timeouts fall at the time limit only."""
    ds = data.load(ID, built["root"])
    obs, nxt = ds.observations, ds.next_observations
    lengths = ds.metadata["episode_lengths"]
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    env = envs.make("pointmaze-umaze", "mujoco", wrap=False, goals="any")

    state = env.reset(jax.random.key(0))
    physics = env.initial_physics(obs[0, :2], obs[0, 2:4])

    @jax.jit
    def replay(physics, actions, goals):
        def body(physics, inputs):
            action, goal = inputs
            s = state.replace(pipeline_state=physics, info={**state.info, "goal": goal})
            out = env.step(s, action)
            return out.pipeline_state, (out.obs, out.reward, out.done)
        return jax.lax.scan(body, physics, (actions, goals))[1]

    got_obs, got_reward, got_done = jax.device_get(replay(physics, ds.actions, obs[:, 4:]))
    np.testing.assert_array_equal(got_obs, nxt)
    np.testing.assert_array_equal(got_reward, ds.rewards)
    np.testing.assert_array_equal(got_done, ds.terminals)  # the task ends at the goal
    assert ds.rewards.sum() > 10  # a few dozen goals reached in 2000 steps
    # within an episode the goal is fixed and observations chain; between episodes only the
    # goal changes (the agent carries on from where it was)
    within = np.ones(len(obs) - 1, bool)
    within[starts[1:] - 1] = False
    np.testing.assert_array_equal(obs[1:][within], nxt[:-1][within])
    np.testing.assert_array_equal(obs[starts[1:], :4], nxt[starts[1:] - 1, :4])
    assert np.all(np.any(obs[starts[1:], 4:] != nxt[starts[1:] - 1, 4:], axis=1))
    limit = env.spec.episode_length
    ends = starts + lengths - 1
    assert np.all(ds.terminals[ends[:-1]] + ds.timeouts[ends[:-1]] == 1)
    assert np.all(lengths[ds.timeouts[ends] > 0][:-1] == limit)
    assert ds.timeouts[ends[-1]] == 1 - ds.terminals[ends[-1]]  # the size cut is a truncation


def test_ids_and_success_reference_scores(built):
    name = data.parse(ID)
    assert (name.task, name.kind, name.size) == ("pointmaze-umaze", "maze2d", SIZE)
    assert name.minari_id == "offbench/pointmaze-umaze/maze2d-2k-v0"
    assert data.parse(name.minari_id) == name and name.short == ID
    assert data.parse("pointmaze-large").short == "pointmaze-large"
    with pytest.raises(ValueError, match="valid kinds are maze2d, fixed$"):
        data.parse("pointmaze-umaze-expert")
    assert data.parse("antmaze-umaze").kind == "play"  # AntMaze: tests/test_antmaze_datasets.py
    # random 0, always succeeding 100: the normalized score is 100 x the success rate
    ref = policies.reference_scores("pointmaze-umaze")
    assert ref == (0.0, 1.0)
    assert normalized_score(0.0, *ref) == 0.0 and normalized_score(1.0, *ref) == 100.0
    assert normalized_score(np.mean([1.0, 0.0, 1.0, 1.0]), *ref) == 75.0
    ds = data.load(ID, built["root"])
    assert (ds.metadata["ref_min"], ds.metadata["ref_max"]) == ref
    record = json.loads((built["a"] / builder.SIDECAR).read_text())
    assert record["reference_scores"] == {"ref_min": 0.0, "ref_max": 1.0}


def test_report_rows_score_the_success_fraction(built, tmp_path):
    """`offbench datasets report` on a maze task: normalized = 100 x the fraction of whole
    episodes (not cut by the end of the data) that reach their goal."""
    from offbench.reports import datasets as report

    df = report.table(["pointmaze-umaze"], SIZE, built["root"], log=lambda *_: None)
    ds = data.load(ID, built["root"])
    ends = np.cumsum(ds.metadata["episode_lengths"]) - 1
    whole = (ds.terminals[ends] > 0) | (ds.metadata["episode_lengths"] >= 300)
    row = df.iloc[0]
    assert (row.id, row.whole_episodes) == (ID, whole.sum())
    assert row.normalized == pytest.approx(100 * ds.terminals[ends][whole].mean())
    assert np.isnan(row.saco)
    report.write_report(df, tmp_path / "datasets.md", "test", SIZE)
    text = (tmp_path / "datasets.md").read_text()
    assert "pointmaze-umaze" in text and "Behaviour policies" not in text


def test_cli_lists_the_maze_datasets(built, capsys):
    from offbench import cli

    assert cli.main(["datasets", "list", "--root", str(built["root"])]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "built: pointmaze-umaze-2k" in lines["pointmaze-umaze"]
    assert lines["pointmaze-large"].split()[1] == "-"
    # AntMaze's kinds are listed, none built in this root
    antmaze = [name for name in lines if name.startswith("antmaze")]
    assert "antmaze-umaze" in antmaze and all(lines[n].split()[1] == "-" for n in antmaze)


def test_fixed_kind_is_the_same_trajectory_relabeled_to_the_evaluation_goal(built):
    """`fixed`: byte-identical rebuilds; the maze2d data's states and actions, step for step;
    every observation's goal a draw of the evaluation goal (the eval map's goal cell centre
    plus the env's goal noise), constant within an episode; rewards and terminations equal a
    recomputation from the next positions (1 within goal_radius, only at an episode's last
    transition); episodes without success end at the time limit."""
    assert _files(built["fixed_a"]) == _files(built["fixed_b"])
    name = data.parse(FIXED)
    assert (name.kind, name.minari_id) == ("fixed", "offbench/pointmaze-umaze/fixed-2k-v0")
    assert data.parse("pointmaze-medium-fixed-100k").short == "pointmaze-medium-fixed-100k"
    record = json.loads((built["fixed_a"] / builder.SIDECAR).read_text())
    assert record["kind"] == "fixed" and record["behaviour"]["goals"].startswith("eval")
    base, ds = data.load(ID, built["root"]), data.load(FIXED, built["root"])
    np.testing.assert_array_equal(ds.actions, base.actions)
    np.testing.assert_array_equal(ds.observations[:, :4], base.observations[:, :4])
    np.testing.assert_array_equal(ds.next_observations[:, :4], base.next_observations[:, :4])

    env = envs.make("pointmaze-umaze", "mujoco", wrap=False, goals="eval")
    centre, noise = env.goal_cells[0], env.spec.position_noise_range * env.spec.maze_size_scaling
    np.testing.assert_array_equal(centre, cell_xy(UMAZE, 1.0, (1, 1)))  # D4RL's goal cell
    goals = ds.observations[:, 4:]
    np.testing.assert_array_equal(ds.next_observations[:, 4:], goals)
    assert np.all(np.abs(goals - centre) <= noise)
    lengths = ds.metadata["episode_lengths"]
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    episode = np.repeat(np.arange(len(lengths)), lengths)
    np.testing.assert_array_equal(goals, goals[starts][episode])  # one goal per episode
    assert len(np.unique(goals[starts], axis=0)) == len(lengths)  # a new draw each episode

    distance = np.linalg.norm(ds.next_observations[:, :2] - goals, axis=1)
    reached = (distance <= env.spec.goal_radius).astype(np.float32)
    ends = starts + lengths - 1
    last = np.zeros(len(goals), bool)
    last[ends] = True
    np.testing.assert_array_equal(ds.rewards, reached * last)  # the first success ends it
    assert not np.any(reached[~last])
    np.testing.assert_array_equal(ds.terminals, ds.rewards)
    assert ds.rewards.sum() > 5
    timed_out = ds.timeouts[ends[:-1]] > 0
    assert np.all(ds.terminals[ends[:-1]] + ds.timeouts[ends[:-1]] == 1)
    assert np.all(lengths[:-1][timed_out] == env.spec.episode_length)
