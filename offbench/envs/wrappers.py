"""Time limit and auto-reset for single environment instances (vmap them for batches).

brax's `EpisodeWrapper`/`AutoResetWrapper` expect an already-batched env and reset every
episode to the *same* first state; ours draw a fresh random initial state for each episode (as
Gymnasium does), keep truncation apart from termination, and keep the final observation of a
finished episode so replay buffers store correct `next_obs`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper


class TimeLimit(Wrapper):
    """Ends an episode after `episode_length` steps as a truncation, never a termination.

    info["steps"]: steps taken in the episode; info["truncation"]: 1 when the episode ended by
    the time limit only. `done` is 1 for either kind of end (brax's convention).
    """

    def __init__(self, env: Env, episode_length: int):
        super().__init__(env)
        if episode_length <= 0:
            raise ValueError(f"episode_length must be positive, got {episode_length}")
        self.episode_length = episode_length

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        zero = jnp.zeros((), jnp.float32)
        return state.replace(info={**state.info, "steps": zero, "truncation": zero})

    def step(self, state: State, action: jax.Array) -> State:
        state = self.env.step(state, action)
        steps = state.info["steps"] + 1
        truncated = (steps >= self.episode_length) & (state.done == 0)
        done = jnp.maximum(state.done, truncated.astype(jnp.float32))
        return state.replace(done=done, info={**state.info, "steps": steps,
                                              "truncation": truncated.astype(jnp.float32)})


class AutoReset(Wrapper):
    """Starts a fresh random episode in the same step that ends one.

    After a step that ends an episode, `obs` and the physics state are those of the new
    episode; `reward`, `done`, `metrics` and info["truncation"] describe the transition that
    ended; info["final_obs"] always holds the observation the step produced before any reset
    (use it as the transition's next observation).
    """

    def reset(self, rng: jax.Array) -> State:
        rng, key = jax.random.split(rng)
        state = self.env.reset(key)
        return state.replace(info={**state.info, "rng": rng, "final_obs": state.obs})

    def step(self, state: State, action: jax.Array) -> State:
        stepped = self.env.step(state, action)
        rng, key = jax.random.split(state.info["rng"])
        fresh = self.env.reset(key)
        done = stepped.done > 0

        def pick(new, old):
            return jnp.where(done, new, old)

        info = {**stepped.info, "rng": rng, "final_obs": stepped.obs}
        for k in fresh.info:  # per-episode counters restart (e.g. steps)
            if k not in ("truncation", "invalid_action"):
                info[k] = pick(fresh.info[k], stepped.info[k])
        return stepped.replace(
            pipeline_state=jax.tree.map(pick, fresh.pipeline_state, stepped.pipeline_state),
            obs=pick(fresh.obs, stepped.obs), info=info)
