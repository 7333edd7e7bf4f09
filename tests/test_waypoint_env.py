"""The waypoint task (offbench/envs/waypoint.py), on the C backend. Oracle: the `ant` task
(Ant-v5, itself checked against Gymnasium): with the waypoint straight ahead along +x the
waypoint task's reward is Ant-v5's; along +y it is Ant-v5's with the y velocity for the x one.
Invariants: the observation is Ant-v5's seen along the waypoint's bearing, reward and
observation do not change when state and waypoint are rotated together, waypoints move on by
4 m with a left, straight or right turn, and a flip ends the episode."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs
from offbench.envs import spec as spec_module
from offbench.envs import waypoint


@pytest.fixture(scope="module")
def pair():
    """(the waypoint env, the Ant-v5 env, a waypoint-env state mid-stride)."""
    env = envs.make("ant-waypoint", "mujoco", wrap=False)
    ant = envs.make("ant", "mujoco", wrap=False)
    state = env.reset(jax.random.key(0))
    rng = np.random.default_rng(0)
    for _ in range(30):
        state = env.step(state, jnp.asarray(rng.uniform(-1, 1, 8), jnp.float32))
    return env, ant, state


def with_waypoint(state, target):
    return state.replace(info={**state.info, "waypoint": jnp.asarray(target, jnp.float32)})


def test_listed_with_ant_v5_sizes(pair):
    env, ant, _ = pair
    assert "ant-waypoint" in envs.task_names()
    assert (env.observation_size, env.action_size) == (ant.observation_size, ant.action_size)
    assert envs.make("ant-waypoint", "mujoco").episode_length == 1000


def test_reset_puts_a_waypoint_4m_away_and_observes_along_its_bearing(pair):
    env, _, _ = pair
    for k in range(5):
        state = env.reset(jax.random.key(k))
        p = state.pipeline_state
        target = state.info["waypoint"]
        assert abs(float(jnp.linalg.norm(target - p.qpos[:2])) - 4.0) < 1e-5
        np.testing.assert_array_equal(
            state.obs, waypoint.heading_observation(p, waypoint.bearing(p, target)))


def test_reward_is_ant_v5s_with_the_velocity_towards_the_waypoint(pair):
    env, ant, state = pair
    p = state.pipeline_state
    action = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, 8), jnp.float32)
    base = ant.step(state.replace(info={"invalid_action": jnp.zeros(())}), action)
    ahead = env.step(with_waypoint(state, p.qpos[:2] + jnp.array([50.0, 0.0])), action)
    np.testing.assert_allclose(ahead.reward, base.reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ahead.metrics["velocity_towards"], base.metrics["x_velocity"],
                               rtol=1e-5, atol=1e-5)
    left = env.step(with_waypoint(state, p.qpos[:2] + jnp.array([0.0, 50.0])), action)
    expected = base.reward - base.metrics["x_velocity"] + base.metrics["y_velocity"]
    np.testing.assert_allclose(left.reward, expected, rtol=1e-5, atol=1e-5)
    assert float(ahead.done) == float(base.done) == 0.0


def test_rotating_state_and_waypoint_changes_neither_observation_nor_reward(pair):
    env, _, state = pair
    p = state.pipeline_state
    target = p.qpos[:2] + jnp.array([3.0, 1.0])
    action = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, 8), jnp.float32)
    ref = env.step(with_waypoint(state, target), action)
    for angle in (0.9, -2.2):
        a = jnp.float32(angle)
        rotated = state.replace(pipeline_state=waypoint.rotate_physics(p, a))
        moved = env.step(with_waypoint(rotated, waypoint.rot2(target, a)), action)
        np.testing.assert_allclose(moved.obs, ref.obs, atol=2e-4)
        np.testing.assert_allclose(moved.reward, ref.reward, atol=2e-4)


def test_a_reached_waypoint_moves_on_4m_turning_left_straight_or_right(pair):
    env, _, state = pair
    p = state.pipeline_state
    turns = set()
    for k in range(24):
        leg = 0.4
        s = with_waypoint(state, p.qpos[:2] + jnp.array([0.5, 0.0]))  # within reach (2 m)
        s = s.replace(info={**s.info, "leg": jnp.float32(leg),
                            "waypoint_key": jax.random.key_data(jax.random.key(k))})
        s = s.replace(metrics={**s.metrics, "waypoints": jnp.float32(3)})
        after = env.step(s, jnp.zeros(8))
        step = np.asarray(after.info["waypoint"] - s.info["waypoint"])
        assert abs(np.linalg.norm(step) - 4.0) < 1e-4
        turn = math.degrees(math.atan2(step[1], step[0]) - leg)
        turn = (turn + 180) % 360 - 180
        assert min(abs(turn - t) for t in (-90, 0, 90)) < 1e-2, turn
        turns.add(round(turn))
        assert float(after.metrics["waypoints"]) == 4.0
        np.testing.assert_allclose(after.info["leg"], math.radians(round(turn)) + leg,
                                   atol=1e-5)
    assert turns == {-90, 0, 90}
    # not reached: the waypoint stays
    far = with_waypoint(state, p.qpos[:2] + jnp.array([3.0, 0.0]))
    np.testing.assert_array_equal(env.step(far, jnp.zeros(8)).info["waypoint"],
                                  far.info["waypoint"])


def test_a_flip_ends_the_episode_where_ant_v5_goes_on(pair):
    env, ant, state = pair
    p = state.pipeline_state
    upside_down = p.replace(qpos=p.qpos.at[2].set(0.6).at[3:7].set(jnp.array([0, 1.0, 0, 0])),
                            qvel=jnp.zeros_like(p.qvel))
    s = state.replace(pipeline_state=upside_down)
    assert float(env.step(s, jnp.zeros(8)).done) == 1.0
    assert float(ant.step(s.replace(info={"invalid_action": jnp.zeros(())}),
                          jnp.zeros(8)).done) == 0.0


def test_a_waypoint_spec_needs_a_locomotion_base(tmp_path):
    (tmp_path / "w.toml").write_text(
        '[w]\nfamily = "waypoint"\ngymnasium_id = "-"\nbase_task = "nope"\n'
        "episode_length = 10\nsegment = 4.0\nreach = 2.0\nturns = [0.0]\n")
    with pytest.raises(ValueError, match="base_task 'nope' is not a locomotion task"):
        spec_module.load_specs(tmp_path)
