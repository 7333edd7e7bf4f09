"""Time limit, auto-reset, bad input, dynamics overrides and brax compatibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs


def run(env, actions, key=0):
    """Scan `env` over a (T, action_size) action sequence from reset; returns all states."""
    def body(state, action):
        state = env.step(state, action)
        return state, state
    return jax.jit(lambda k, a: jax.lax.scan(body, env.reset(k), a))(jax.random.key(key), actions)


def test_time_limit_truncates_and_never_terminates():
    env = envs.make("halfcheetah", "mujoco", auto_reset=False)
    assert env.episode_length == 1000
    _, states = run(env, jnp.zeros((1000, env.action_size)))
    done, trunc = np.asarray(states.done), np.asarray(states.info["truncation"])
    assert done[:-1].sum() == 0 and done[-1] == 1
    assert trunc[:-1].sum() == 0 and trunc[-1] == 1
    assert np.asarray(states.info["steps"])[-1] == 1000


def test_auto_reset_keeps_episodes_apart():
    limit = 25
    env = envs.make("hopper", "mujoco", episode_length=limit)
    bare = env.unwrapped
    actions = jax.random.uniform(jax.random.key(3), (400, env.action_size), minval=-1, maxval=1)
    _, s = run(env, actions)
    done, trunc = np.asarray(s.done), np.asarray(s.info["truncation"])
    steps, obs = np.asarray(s.info["steps"]), np.asarray(s.obs)
    final = np.asarray(s.info["final_obs"])
    ends = np.flatnonzero(done)
    assert len(ends) >= 5
    terminated = done.astype(bool) & ~trunc.astype(bool)
    assert terminated.any() and trunc.any(), "need both kinds of episode end in this rollout"
    # Every episode lasts until termination or the limit; truncation only at the limit.
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert np.all(lengths <= limit)
    np.testing.assert_array_equal(trunc.astype(bool), lengths_at(ends, lengths, limit, len(done)))
    # A terminated step is really unhealthy; a truncated one is healthy.
    for t in ends:
        # the observation that ended the episode: unhealthy iff it was a termination
        # (hopper obs = qpos[1:] ++ qvel, so qpos is recoverable: x does not matter for health)
        ended = final[t]
        qpos = np.concatenate([[0.0], ended[:5]])
        qvel = ended[5:]  # clipped to +-10 in the obs, which cannot flip health (range 100)
        unhealthy = not bool(bare.is_healthy(bare.initial_physics(qpos, qvel)))
        assert unhealthy == bool(terminated[t]), t
        physics_final = jax.tree.map(lambda x, t=t: x[t], s.pipeline_state)
        assert not np.array_equal(final[t], obs[t]), "after an end, obs is the new episode's"
        # obs after the end is a reset observation: the step counter restarts
        assert steps[t] == 0
        # the physics carried on is the fresh episode's, consistent with obs
        np.testing.assert_allclose(np.asarray(bare.observation(physics_final)), obs[t], rtol=1e-6)
    # Within an episode nothing is reset: final_obs equals obs.
    inside = ~done.astype(bool)
    np.testing.assert_array_equal(final[inside], obs[inside])
    # Fresh random initial states (not brax's "reset to the first state").
    starts = obs[ends]
    assert len({tuple(np.round(x, 6)) for x in starts}) == len(starts)


@pytest.mark.parametrize("task,normal_qvel", [("halfcheetah", True), ("hopper", False)])
def test_reset_noise_distributions(task, normal_qvel):
    """qpos ~ init + U(-s, s) (variance s^2/3); qvel ~ s*N(0,1) (variance s^2) or U(-s, s)."""
    env = envs.make(task, "mujoco", wrap=False)
    s = env.spec.reset_noise_scale
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 4000))
    dq = np.asarray(states.pipeline_state.qpos) - env.model.qpos0
    qvel = np.asarray(states.pipeline_state.qvel)
    assert np.all(np.abs(dq) <= s)
    np.testing.assert_allclose(dq.var(axis=0), s**2 / 3, rtol=0.1)
    np.testing.assert_allclose(qvel.var(axis=0), s**2 if normal_qvel else s**2 / 3, rtol=0.1)
    assert (np.abs(qvel).max() > s) == normal_qvel  # only a normal exceeds the scale


def lengths_at(ends, lengths, limit, n):
    truncated = np.zeros(n, bool)
    truncated[ends[lengths == limit]] = True
    return truncated


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_nan_action_inside_jit_is_refused_and_flagged(backend):
    env = envs.make("halfcheetah", backend, wrap=False)
    state = env.reset(jax.random.key(0))
    bad = jnp.full(env.action_size, jnp.nan)
    out = jax.jit(env.step)(state, bad)
    assert np.isnan(float(out.reward))
    assert float(out.done) == 1.0 and float(out.info["invalid_action"]) == 1.0
    for before, after in zip(jax.tree.leaves(state.pipeline_state),
                             jax.tree.leaves(out.pipeline_state), strict=True):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    ok = jax.jit(env.step)(state, jnp.zeros(env.action_size))
    assert float(ok.info["invalid_action"]) == 0.0 and np.isfinite(float(ok.reward))


def test_bad_input_gives_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown task 'cheetah'.*halfcheetah"):
        envs.make("cheetah")
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'.*mujoco.*mjx"):
        envs.make("hopper", "gpu")
    with pytest.raises(ValueError, match=r"unknown override.*'wind'.*gravity"):
        envs.make("hopper", "mujoco", wind=2.0)
    with pytest.raises(ValueError, match=r"gravity=-1.*non-negative"):
        envs.make("hopper", "mujoco", gravity=-1)
    with pytest.raises(ValueError, match=r"unknown name 'tail'.*torso"):
        envs.make("hopper", "mujoco", mass={"tail": 2.0})
    env = envs.make("hopper", "mujoco", wrap=False)
    state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(4,\)"):
        env.step(state, jnp.zeros(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        env.step(state, jnp.array([0.0, jnp.inf, 0.0]))


def test_dynamics_overrides_on_both_backends():
    base = envs.make("halfcheetah", "mujoco", wrap=False)
    low_g = {b: envs.make("halfcheetah", b, wrap=False, gravity=0.5, mass={"torso": 2.0})
             for b in envs.BACKENDS}
    m0, m1 = base.model, low_g["mujoco"].model
    np.testing.assert_allclose(m1.opt.gravity, 0.5 * m0.opt.gravity)
    np.testing.assert_allclose(m1.body_mass[1], 2 * m0.body_mass[1])
    np.testing.assert_allclose(m1.body_inertia[1], 2 * m0.body_inertia[1])
    np.testing.assert_allclose(m1.body_mass[2:], m0.body_mass[2:])
    # Free fall, 3 m above the floor: half gravity gives half the downward speed after one
    # step (whatever the masses), on both backends.
    qpos = m0.qpos0.copy()
    qpos[1] = 3.0  # rootz
    physics = base.initial_physics(qpos, np.zeros(m0.nv))
    state = base.reset(jax.random.key(0)).replace(pipeline_state=physics)
    vz = float(base.step(state, jnp.zeros(6)).pipeline_state.qvel[1])
    np.testing.assert_allclose(vz, -9.81 * base.dt, rtol=1e-3)
    for env in low_g.values():
        vz_low = float(jax.jit(env.step)(state, jnp.zeros(6)).pipeline_state.qvel[1])
        np.testing.assert_allclose(vz_low, 0.5 * vz, rtol=1e-4)


def test_gear_scale_equals_scaled_action():
    # A motor's force is gear * ctrl: doubling the gear is the same as doubling the action.
    doubled = envs.make("halfcheetah", "mujoco", wrap=False, gear=2.0)
    base = envs.make("halfcheetah", "mujoco", wrap=False)
    state = base.reset(jax.random.key(1))
    action = jnp.linspace(-0.4, 0.4, 6)
    a = doubled.step(state, action).pipeline_state.qpos
    b = base.step(state, 2 * action).pipeline_state.qpos
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    friction = envs.make("halfcheetah", "mujoco", wrap=False, friction=0.3).model
    np.testing.assert_allclose(friction.geom_friction, 0.3 * base.model.geom_friction)


def test_brax_training_agent_runs_on_our_task():
    """brax's own PPO trainer (and its wrappers) accept our env unchanged."""
    from brax.training.agents.ppo import train as ppo

    env = envs.make("halfcheetah", "mujoco", wrap=False)
    _, _, metrics = ppo.train(
        environment=env, num_timesteps=1024, episode_length=32, num_envs=8, batch_size=8,
        num_minibatches=2, unroll_length=8, num_updates_per_batch=1, num_evals=2, seed=0)
    total = metrics["eval/episode_reward"]
    parts = metrics["eval/episode_reward_forward"] + metrics["eval/episode_reward_ctrl"]
    assert np.isfinite(total)
    np.testing.assert_allclose(total, parts, rtol=1e-4, atol=1e-3)
