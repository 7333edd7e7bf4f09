"""The two physics backends agree with each other, and both work under jit, vmap and scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs

from conftest import TASKS, bare_env


def random_states(env, step, n: int, seed: int):
    """n states visited by a random policy on the C backend (resetting when an episode ends)."""
    key = jax.random.key(seed)
    state = env.reset(key)
    lo, hi = env.action_bounds
    rng = np.random.default_rng(seed)
    states, actions = [], []
    for i in range(n):
        action = rng.uniform(lo, hi).astype(np.float32)
        states.append(state)
        actions.append(action)
        state = step(state, action)
        if state.done:
            state = env.reset(jax.random.fold_in(key, i))
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    return stack, jnp.asarray(np.stack(actions))


# ant-waypoint: Ant-v5's physics plus JAX functions of the state (offbench/envs/waypoint.py)
@pytest.mark.parametrize("task", TASKS + ("ant-waypoint",))
def test_backends_agree_on_same_states_and_actions(task):
    c_env, c_step, c_vstep = bare_env(task, "mujoco")
    _, _, m_vstep = bare_env(task, "mjx")
    states, actions = random_states(c_env, c_step, 100, seed=1)
    c_next, m_next = c_vstep(states, actions), m_vstep(states, actions)
    scale = np.maximum(1.0, np.abs(np.asarray(c_next.obs)))
    obs_err = np.max(np.abs(np.asarray(m_next.obs) - np.asarray(c_next.obs)) / scale)
    rew_err = np.max(np.abs(np.asarray(m_next.reward) - np.asarray(c_next.reward))
                     / np.maximum(1.0, np.abs(np.asarray(c_next.reward))))
    # Same float32 tolerance as the Gymnasium parity test (MJX solves contacts in float32).
    assert obs_err < 2e-3 and rew_err < 2e-3, (obs_err, rew_err)
    np.testing.assert_array_equal(np.asarray(m_next.done), np.asarray(c_next.done))


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_jit_vmap_scan_and_batched_equals_single(backend):
    env = envs.make("hopper", backend, episode_length=20)
    batch, steps = 4, 30
    keys = jax.random.split(jax.random.key(0), batch)
    actions = jax.random.uniform(jax.random.key(1), (steps, batch, env.action_size),
                                 minval=-1.0, maxval=1.0)

    def rollout(state, acts):
        def body(s, a):
            s = jax.vmap(env.step)(s, a) if acts.ndim == 3 else env.step(s, a)
            return s, (s.obs, s.reward, s.done)
        return jax.lax.scan(body, state, acts)[1]

    batched = jax.jit(rollout)(jax.vmap(env.reset)(keys), actions)
    assert batched[0].shape == (steps, batch, env.observation_size)
    assert np.all(np.isfinite(np.asarray(batched[0])))
    single_fn = jax.jit(rollout)
    for i in range(batch):  # env i alone gives what it gave inside the batch
        single = single_fn(env.reset(keys[i]), actions[:, i])
        for got, want in zip(single, batched, strict=True):
            if backend == "mujoco":  # same C calls on the same inputs: bit for bit
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want)[:, i])
            else:  # XLA vectorizes batched MJX math differently: equal up to float32 rounding
                np.testing.assert_allclose(np.asarray(got), np.asarray(want)[:, i],
                                           rtol=1e-5, atol=1e-5)
