"""Vectorized rollouts of a policy: episode returns (evaluation) and transition collection
(datasets). Both run as one jitted `lax.scan` over time with the envs batched by `vmap`.

A policy here is `act(obs, key) -> action` on a batch of observations, actions in [-1, 1]; the
env's own action box is applied here, so policies never see it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env

Policy = Callable[[jax.Array, jax.Array], jax.Array]


def to_env_action(env: Env, action: jax.Array) -> jax.Array:
    """Map an action in [-1, 1] onto the env's action box."""
    low, high = env.unwrapped.action_bounds
    low, high = jnp.asarray(low), jnp.asarray(high)
    return low + (action + 1.0) * 0.5 * (high - low)


def episode_returns(env: Env, act: Policy, key: jax.Array, episodes: int) -> jax.Array:
    """Undiscounted returns of `episodes` whole episodes, one per env instance, all at once.

    `env` must have a time limit and no auto-reset. The env resets use split(key, episodes);
    the policy gets fold_in(key, t) at step t (unused by deterministic policies).
    """
    return episode_returns_with_memory(env, lambda obs, k, memory, _: (act(obs, k), memory),
                                       (), key, episodes)


def episode_returns_with_memory(env: Env, act: Callable, memory, key: jax.Array,
                                episodes: int) -> jax.Array:
    """As `episode_returns`, for a policy with per-episode memory (a Decision Transformer's
    context): `act(obs, key, memory, reward) -> (action, memory)`, `memory` starting as given
    for the `episodes` envs, `reward` the env's reward for the previous action (0 at the first
    step). The resets and keys are `episode_returns`'s."""
    state = jax.vmap(env.reset)(jax.random.split(key, episodes))

    def body(carry, t):
        state, alive, total, memory, reward = carry
        action, memory = act(state.obs, jax.random.fold_in(key, t), memory, reward)
        state = jax.vmap(env.step)(state, to_env_action(env, action))
        total = total + jnp.where(alive > 0, state.reward, 0.0)  # 0 * NaN would be NaN
        return (state, alive * (1.0 - state.done), total, memory, state.reward), None

    init = (state, jnp.ones(episodes), jnp.zeros(episodes), memory, jnp.zeros(episodes))
    (_, _, total, _, _), _ = jax.lax.scan(body, init, jnp.arange(env.episode_length))
    return total


def collect(env: Env, act: Policy, key: jax.Array, num_envs: int, steps: int,
            physics: bool = False) -> dict[str, np.ndarray]:
    """`steps` steps of `num_envs` auto-resetting envs under `act`, as host arrays shaped
    [num_envs, steps, ...]: observations, actions (in [-1, 1]), rewards, next_observations
    (the true next observation, also at episode ends), terminals, timeouts (time-limit ends).
    physics: also `qpos` and `qvel`, each transition's start physics state (the env's
    `pipeline_state`, offbench's PhysicsState on either backend), that `observations` is the
    observation of (opt-in: without it the program is the one it always was)."""
    k_reset, k_act = jax.random.split(key)

    @jax.jit
    def run(k_reset, k_act):
        state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

        def body(state, t):
            action = act(state.obs, jax.random.fold_in(k_act, t))
            nxt = jax.vmap(env.step)(state, to_env_action(env, action))
            timeout = nxt.info["truncation"]
            out = {"observations": state.obs, "actions": action, "rewards": nxt.reward,
                   "next_observations": nxt.info["final_obs"],
                   "terminals": nxt.done * (1.0 - timeout), "timeouts": timeout}
            if physics:
                out.update(qpos=state.pipeline_state.qpos, qvel=state.pipeline_state.qvel)
            return nxt, out

        _, out = jax.lax.scan(body, state, jnp.arange(steps))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)

    return {k: np.asarray(v) for k, v in jax.device_get(run(k_reset, k_act)).items()}
