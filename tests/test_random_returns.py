"""Random-policy episode returns agree with Gymnasium's statistically, for every task.

Uniform random actions in the action box, fresh reset noise per episode, 1000-step time limit.
Pass criterion: the difference of the two sample means is within 4.5 standard errors of the
difference (Welch); for identical dynamics that fails with probability ~1e-5, and the seeds are
fixed, so the test is deterministic. Wrong reward terms, termination ranges or reset noise move
the mean by many standard errors (e.g. a missing healthy reward shifts Hopper by ~20).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import offbench.envs as envs

from conftest import TASKS
from gym_oracle import make_gym

EPISODES = 30


def our_returns(task: str) -> np.ndarray:
    env = envs.make(task, "mujoco", auto_reset=False)
    lo, hi = env.unwrapped.action_bounds
    horizon = env.episode_length

    @jax.jit
    def run(key):
        keys = jax.random.split(key, EPISODES)
        state = jax.vmap(env.reset)(keys)

        def body(carry, key_t):
            state, alive, total = carry
            action = jax.random.uniform(key_t, (EPISODES, len(lo)), minval=lo, maxval=hi)
            state = jax.vmap(env.step)(state, action)
            total = total + jnp.where(alive > 0, state.reward, 0.0)
            alive = alive * (1.0 - state.done)
            return (state, alive, total), None

        init = (state, jnp.ones(EPISODES), jnp.zeros(EPISODES))
        (_, alive, total), _ = jax.lax.scan(body, init, jax.random.split(key, horizon))
        return total, alive

    total, alive = run(jax.random.key(7))
    assert np.all(np.asarray(alive) == 0), "every episode must have ended (time limit)"
    return np.asarray(total)


def gym_returns(task: str) -> np.ndarray:
    gym_env = make_gym(envs.make(task, "mujoco", wrap=False))
    gym_env.action_space.seed(7)
    returns = []
    for episode in range(EPISODES):
        gym_env.reset(seed=episode)
        total = 0.0
        for _ in range(1000):
            _, reward, terminated, _, _ = gym_env.step(gym_env.action_space.sample())
            total += reward
            if terminated:
                break
        returns.append(total)
    return np.asarray(returns)


@pytest.mark.parametrize("task", TASKS)
def test_random_policy_returns_match_gymnasium(task):
    ours, theirs = our_returns(task), gym_returns(task)
    se = np.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
    diff = ours.mean() - theirs.mean()
    print(f"{task}: ours {ours.mean():.1f}±{ours.std():.1f}, gymnasium "
          f"{theirs.mean():.1f}±{theirs.std():.1f}, diff/se {diff / se:.2f}")
    assert abs(diff) <= 4.5 * se, (ours.mean(), theirs.mean(), se)
