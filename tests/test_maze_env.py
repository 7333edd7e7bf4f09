"""Maze tasks through `offbench.envs.make`: time limit, termination at the goal, auto-reset,
goal modes, continuing tasks with goal redraws, bad input, and both backends on one batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs


def run(env, actions, key=0, state=None):
    def body(state, action):
        state = env.step(state, action)
        return state, state
    start = env.reset(jax.random.key(key)) if state is None else state
    return jax.jit(lambda s, a: jax.lax.scan(body, s, a))(start, actions)


def towards_goal(env, state):
    """A state whose agent sits 0.8 from its goal (along the open corridor of the mazes' eval
    goal cells), moving towards it."""
    goal = state.info["goal"]
    physics = state.pipeline_state.replace(qpos=goal + jnp.array([0.8, 0.0]),
                                           qvel=jnp.array([-2.0, 0.0]))
    return state.replace(pipeline_state=physics)


def test_listed_with_time_limits_and_sizes():
    names = envs.task_names()
    for task, limit in (("pointmaze-umaze", 300), ("pointmaze-medium", 600),
                        ("pointmaze-large", 800)):
        assert task in names
        env = envs.make(task, "mujoco")
        assert env.episode_length == limit
        assert (env.observation_size, env.action_size) == (6, 2)
    for task, limit in (("antmaze-umaze", 700), ("antmaze-medium", 1000),
                        ("antmaze-large", 1000)):
        env = envs.make(task, "mujoco")
        assert env.episode_length == limit
        assert (env.observation_size, env.action_size) == (107, 8)  # Ant-v5's 105 + goal


def test_success_terminates_with_return_one_and_auto_resets():
    env = envs.make("pointmaze-umaze", "mujoco")
    state = env.reset(jax.random.key(0))
    state = state.replace(pipeline_state=towards_goal(env, state).pipeline_state)
    first_goal = np.asarray(state.info["goal"])
    _, s = run(env, jnp.zeros((40, 2)), state=state)
    done, reward = np.asarray(s.done), np.asarray(s.reward)
    end = int(np.flatnonzero(done)[0])
    assert end > 0 and reward[:end].sum() == 0 and reward[end] == 1.0, "reward 1 at the goal"
    assert np.asarray(s.metrics["success"])[end] == 1.0
    assert np.asarray(s.info["truncation"])[end] == 0
    final = np.asarray(s.info["final_obs"])[end]
    np.testing.assert_array_equal(final[4:], first_goal)  # the goal in the observation
    assert np.linalg.norm(final[:2] - first_goal) <= 0.45
    # auto-reset: a new episode with a freshly drawn start, away from the goal
    assert np.asarray(s.info["steps"])[end] == 0
    new = np.asarray(s.obs)[end]
    assert np.linalg.norm(new[:2] - new[4:]) > 0.45


def test_time_limit_truncates_without_success():
    env = envs.make("pointmaze-umaze", "mujoco", auto_reset=False)
    _, s = run(env, jnp.zeros((300, 2)), key=1)
    done, trunc = np.asarray(s.done), np.asarray(s.info["truncation"])
    assert done[:-1].sum() == 0 and done[-1] == 1 and trunc[-1] == 1
    assert np.asarray(s.reward).sum() == 0


def test_goal_modes():
    eval_env = envs.make("pointmaze-medium", "mujoco", wrap=False)
    assert len(eval_env.goal_cells) == 1 and len(eval_env.reset_cells) == 25
    diverse = envs.make("pointmaze-medium", "mujoco", wrap=False, goals="diverse")
    assert len(diverse.goal_cells) == 3 and len(diverse.reset_cells) == 1
    anywhere = envs.make("pointmaze-medium", "mujoco", wrap=False, goals="any")
    assert len(anywhere.goal_cells) == len(anywhere.reset_cells) == 26
    # D4RL maze2d's goal cell (row 6, column 6) at x = 6.5 - 4, y = 4 - 6.5
    np.testing.assert_allclose(eval_env.goal_cells[0], [2.5, -2.5])


def test_continuing_task_redraws_the_goal_when_reached():
    env = envs.make("pointmaze-umaze", "mujoco", wrap=False, continuing=True, reset_target=True)
    state = towards_goal(env, env.reset(jax.random.key(2)))
    _, s = run(env, jnp.zeros((40, 2)), state=state)
    success, done = np.asarray(s.info["success"]), np.asarray(s.done)
    assert done.sum() == 0 and success.sum() >= 1
    t = int(np.flatnonzero(success)[0])
    goals = np.asarray(s.info["goal"])
    assert t > 0 and not np.array_equal(goals[t], goals[t - 1])
    assert np.linalg.norm(np.asarray(s.obs)[t, :2] - goals[t]) > 0.45
    # without reset_target the goal stays and reward accrues at every step spent there
    env = envs.make("pointmaze-umaze", "mujoco", wrap=False, continuing=True)
    state = towards_goal(env, env.reset(jax.random.key(2)))
    _, s = run(env, jnp.zeros((40, 2)), state=state)
    assert np.asarray(s.done).sum() == 0 and np.asarray(s.reward).sum() > 5


def test_bad_input_gives_one_clear_error():
    with pytest.raises(ValueError, match="no diverse-goal map"):
        envs.make("pointmaze-umaze", "mujoco", goals="diverse")
    with pytest.raises(ValueError, match="goals='nowhere' is not one of"):
        envs.make("pointmaze-umaze", "mujoco", goals="nowhere")
    with pytest.raises(ValueError, match="reset_target=True needs continuing=True"):
        envs.make("pointmaze-umaze", "mujoco", reset_target=True)
    with pytest.raises(ValueError, match="unknown override"):
        envs.make("pointmaze-umaze", "mujoco", wind=1.0)
    env = envs.make("pointmaze-umaze", "mujoco", wrap=False)
    state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"must have shape \(2,\)"):
        env.step(state, jnp.zeros(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        env.step(state, jnp.array([np.nan, 0.0]))
    refused = jax.jit(env.step)(state, jnp.array([np.nan, 0.0]))
    assert np.isnan(refused.reward) and refused.done == 1 and refused.info["invalid_action"] == 1


@pytest.mark.parametrize("task", ["pointmaze-umaze", "pointmaze-large"])
def test_backends_agree_on_a_batch(task):
    """Both backends from the same (pure-JAX) resets, vmapped and scanned: same trajectories
    to float32 error, so MJX and C agree also over many steps of a batch."""
    keys = jax.random.split(jax.random.key(5), 4)
    actions = jax.random.uniform(jax.random.key(6), (60, 4, 2), minval=-1, maxval=1)
    out = {}
    for backend in ("mujoco", "mjx"):
        env = envs.make(task, backend, wrap=False, continuing=True)

        def body(state, action, env=env):
            state = jax.vmap(env.step)(state, action)
            return state, state.obs
        out[backend] = np.asarray(jax.jit(lambda k, a, env=env, body=body: jax.lax.scan(
            body, jax.vmap(env.reset)(k), a)[1])(keys, actions))
    np.testing.assert_allclose(out["mjx"], out["mujoco"], atol=2e-3)


def test_malformed_maze_spec_is_one_clear_error():
    from offbench.envs.maze_spec import parse_spec

    good = {"family": "maze", "gymnasium_id": "PointMaze_UMaze-v3", "agent": "point",
            "maze_size_scaling": 1.0, "maze_height": 0.4, "episode_length": 300,
            "maze_map": ["###", "#.#", "###"], "eval_map": ["###", "#g#", "###"]}
    assert parse_spec("t", good).eval_map == ("###", "#g#", "###")
    with pytest.raises(ValueError, match="unknown fields"):
        parse_spec("t", {**good, "walls": 1})
    with pytest.raises(ValueError, match="agent must be one of"):
        parse_spec("t", {**good, "agent": "humanoid"})
    with pytest.raises(ValueError, match="rows of equal length"):
        parse_spec("t", {**good, "eval_map": ["###", "#x#", "###"]})
    with pytest.raises(ValueError, match="walls differ"):
        parse_spec("t", {**good, "eval_map": ["###", "###", "###"]})
