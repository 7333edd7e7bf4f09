"""A minimal algorithm module: deterministic actor-critic (DDPG) in the offbench contract.

Copy this file to baselines/NAME.py to start a new algorithm. The harness owns everything else
(loops, replay, vmapping over seeds, evaluation, checkpoints).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP, Critic

MODES = ("online",)


@dataclasses.dataclass(frozen=True)
class Config:  # published defaults go here
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    exploration_noise: float = 0.1


class State(struct.PyTreeNode):
    actor: dict
    critic: dict
    target_actor: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def _nets(config: Config, spec: EnvSpec):
    return MLP(config.hidden, spec.action_size), Critic(config.hidden)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> State:
    config = config or Config()
    actor_net, critic_net = _nets(config, spec)
    k1, k2 = jax.random.split(key)
    obs, act = jnp.zeros((1, spec.observation_size)), jnp.zeros((1, spec.action_size))
    actor, critic = actor_net.init(k1, obs), critic_net.init(k2, obs, act)
    tx = optax.adam(config.lr)
    return State(actor, critic, actor, critic, tx.init(actor), tx.init(critic), config, spec)


def act(state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    action = jnp.tanh(_nets(state.config, state.spec)[0].apply(state.actor, obs))
    if deterministic:
        return action
    noise = state.config.exploration_noise * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, -1.0, 1.0)


def update(state: State, batch: Transition, key: jax.Array) -> tuple[State, dict]:
    cfg, tx = state.config, optax.adam(state.config.lr)
    actor_net, critic_net = _nets(cfg, state.spec)
    next_action = jnp.tanh(actor_net.apply(state.target_actor, batch.next_obs))
    next_q = critic_net.apply(state.target_critic, batch.next_obs, next_action)
    target = batch.reward + cfg.discount * (1.0 - batch.terminal) * next_q

    def critic_loss(p):
        return jnp.mean((critic_net.apply(p, batch.obs, batch.action) - target) ** 2)

    def actor_loss(p):
        action = jnp.tanh(actor_net.apply(p, batch.obs))
        return -jnp.mean(critic_net.apply(state.critic, batch.obs, action))

    c_loss, c_grad = jax.value_and_grad(critic_loss)(state.critic)
    a_loss, a_grad = jax.value_and_grad(actor_loss)(state.actor)
    c_upd, critic_opt = tx.update(c_grad, state.critic_opt)
    a_upd, actor_opt = tx.update(a_grad, state.actor_opt)
    critic = optax.apply_updates(state.critic, c_upd)
    actor = optax.apply_updates(state.actor, a_upd)
    state = state.replace(
        actor=actor, critic=critic, actor_opt=actor_opt, critic_opt=critic_opt,
        target_actor=optax.incremental_update(actor, state.target_actor, cfg.tau),
        target_critic=optax.incremental_update(critic, state.target_critic, cfg.tau))
    return state, {"critic_loss": c_loss, "actor_loss": a_loss}
