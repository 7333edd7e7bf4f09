"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 (Fujimoto et al. 2018) with a behaviour-cloning term added to the actor loss:

    critic  sum_i mean_batch (Q_i(s, a) - y)^2   over the twin critics i = 1, 2
            y = r + gamma * (1 - terminal) * min_i Q'_i(s', a'),
            a' = clip(pi'(s') + clip(eps, -noise_clip, noise_clip), -1, 1),
            eps ~ N(0, policy_noise^2)
    actor   -lambda * mean_batch Q_1(s, pi(s)) + mean_{batch, action dims} (pi(s) - a)^2,
            lambda = alpha / mean_batch |Q_1(s, pi(s))|   (a constant: no gradient flows through it)

(primes: target networks). The critic is updated on every update; the actor and the Polyak
averaged targets (actor and critics) on every `policy_freq`-th one, selected by `lax.cond` on the
step counter so `update` stays jit- and vmap-able. Observations are standardized with the
dataset's mean and std (+1e-3) by the harness (`normalize_obs`).

Defaults are the paper's D4RL locomotion settings, as in the authors' code
(github.com/sfujim/TD3_BC, main.py) and CORL (algorithms/offline/td3_bc.py, TrainConfig):
alpha 2.5, gamma 0.99, tau 0.005, policy noise 0.2, noise clip 0.5, policy frequency 2, Adam 3e-4
for actor and critics, 2x256 ReLU nets, batch 256, normalized observations. `expl_noise` (TD3's
0.1) is only used by `act(deterministic=False)`, i.e. when a loop collects data (o2o).

Differences from the reference code: Flax's default initialization (LeCun normal, zero biases)
instead of PyTorch's uniform one; the actor is updated on updates 0, 2, 4, ... (the reference's
counter starts at 1: updates 2, 4, ...); the actor loss is evaluated (and reported) on every
update, but applied only on the delayed ones.

ReBRAC (baselines/rebrac.py) is TD3+BC with different losses and defaults: it reuses the state,
networks, target action, TD loss, update step and `act` defined here, which read only the config
fields both Configs share (hidden, actor_lr, critic_lr, discount, tau, policy_noise, noise_clip,
policy_freq, expl_noise, actor_layer_norm, critic_layer_norm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench import hubl
from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP, CriticEnsemble

MODES = ("offline", "o2o")
# O2O: no published fine-tuning settings for TD3+BC on locomotion; fine-tuning continues with
# the offline ones (BC term included) and explores with expl_noise. ReBRAC's are in rebrac.py.


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5
    policy_freq: int = 2  # actor and target updates on every policy_freq-th update
    alpha: float = 2.5  # lambda = alpha / mean |Q|
    expl_noise: float = 0.1  # std of act()'s Gaussian exploration noise (not deterministic)
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)
    actor_layer_norm: bool = False  # off in TD3+BC; LayerNorm options for ablations
    critic_layer_norm: bool = False


class TD3State(struct.PyTreeNode):
    """TD3's state: deterministic actor, twin critics (one ensemble of 2), their targets."""

    actor: dict
    critic: dict
    target_actor: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    steps: jax.Array
    config: Any = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def networks(config: Any, spec: EnvSpec) -> tuple[MLP, CriticEnsemble]:
    """The actor MLP (tanh applied by `policy`) and the twin critics."""
    actor = MLP(config.hidden, spec.action_size, config.actor_layer_norm)
    critic = CriticEnsemble(config.hidden, 2, config.critic_layer_norm)
    return actor, critic


def optimizers(config: Any) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    return optax.adam(config.actor_lr), optax.adam(config.critic_lr)


def init_state(key: jax.Array, spec: EnvSpec, config: Any) -> TD3State:
    if config.policy_freq < 1:
        raise ValueError(f"policy_freq must be >= 1, got {config.policy_freq}")
    actor_net, critic_net = networks(config, spec)
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((1, spec.observation_size))
    actor = actor_net.init(k_actor, obs)
    critic = critic_net.init(k_critic, obs, jnp.zeros((1, spec.action_size)))
    actor_tx, critic_tx = optimizers(config)
    return TD3State(actor=actor, critic=critic, target_actor=actor, target_critic=critic,
                    actor_opt=actor_tx.init(actor), critic_opt=critic_tx.init(critic),
                    steps=jnp.zeros((), jnp.int32), config=config, spec=spec)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> TD3State:
    return init_state(key, spec, config or Config())


def policy(actor_params, state: TD3State, obs: jax.Array) -> jax.Array:
    """The deterministic policy pi(s) = tanh(MLP(s)), in (-1, 1)."""
    return jnp.tanh(networks(state.config, state.spec)[0].apply(actor_params, obs))


def critics(critic_params, state: TD3State, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of both critics, shape (2, batch)."""
    return networks(state.config, state.spec)[1].apply(critic_params, obs, action)


def q_values(state: TD3State, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of the critics (not the targets), shape (2, batch)."""
    return critics(state.critic, state, obs, action)


def target_action(state: TD3State, next_obs: jax.Array, key: jax.Array) -> jax.Array:
    """Target policy smoothing: clip(pi'(s') + clip(N(0, sigma^2), -c, c), -1, 1)."""
    cfg = state.config
    action = policy(state.target_actor, state, next_obs)
    noise = cfg.policy_noise * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(action + jnp.clip(noise, -cfg.noise_clip, cfg.noise_clip), -1.0, 1.0)


def next_value(state: TD3State, next_obs: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """Clipped double Q: (a', min_i Q'_i(s', a')) with a' the smoothed target action."""
    action = target_action(state, next_obs, key)
    return action, critics(state.target_critic, state, next_obs, action).min(axis=0)


def td_loss(critic_params, state: TD3State, batch: Transition, next_v: jax.Array):
    """sum over the critics of the mean squared error to y = r + gamma (1 - terminal) next_v."""
    target = batch.reward + state.config.discount * (1.0 - batch.terminal) * next_v
    target = jax.lax.stop_gradient(hubl.blend(target, batch, state.config))  # HUBL variants
    q = critics(critic_params, state, batch.obs, batch.action)
    loss = jnp.mean((q - target) ** 2, axis=-1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "q_max": q.max(),
                  "target_mean": target.mean()}


def critic_loss(critic_params, state: TD3State, batch: Transition, key: jax.Array):
    _, next_v = next_value(state, batch.next_obs, key)
    return td_loss(critic_params, state, batch, next_v)


def actor_loss(actor_params, state: TD3State, batch: Transition):
    """-lambda mean Q_1(s, pi(s)) + MSE(pi(s), a), lambda = alpha / mean |Q_1| (constant)."""
    action = policy(actor_params, state, batch.obs)
    q = critics(state.critic, state, batch.obs, action)[0]
    lmbda = jax.lax.stop_gradient(state.config.alpha / jnp.abs(q).mean())
    bc = jnp.mean((action - batch.action) ** 2)
    loss = -lmbda * q.mean() + bc
    return loss, {"actor_loss": loss, "bc_loss": bc, "lambda": lmbda, "q_policy": q.mean()}


def td3_update(state: TD3State, batch: Transition, key: jax.Array,
               critic_loss_fn: Callable, actor_loss_fn: Callable) -> tuple[TD3State, dict]:
    """One TD3 update: a critic step; on every policy_freq-th update an actor step and the
    Polyak updates of both targets (after the steps, as in TD3)."""
    cfg = state.config
    actor_tx, critic_tx = optimizers(cfg)

    grads, critic_info = jax.grad(critic_loss_fn, has_aux=True)(state.critic, state, batch, key)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    state = state.replace(critic=optax.apply_updates(state.critic, updates), critic_opt=critic_opt)

    grads, actor_info = jax.grad(actor_loss_fn, has_aux=True)(state.actor, state, batch)

    def actor_step(s: TD3State) -> TD3State:
        updates, actor_opt = actor_tx.update(grads, s.actor_opt, s.actor)
        actor = optax.apply_updates(s.actor, updates)
        return s.replace(actor=actor, actor_opt=actor_opt,
                         target_actor=optax.incremental_update(actor, s.target_actor, cfg.tau),
                         target_critic=optax.incremental_update(s.critic, s.target_critic,
                                                                cfg.tau))

    state = jax.lax.cond(state.steps % cfg.policy_freq == 0, actor_step, lambda s: s, state)
    return state.replace(steps=state.steps + 1), {**critic_info, **actor_info}


def update(state: TD3State, batch: Transition, key: jax.Array) -> tuple[TD3State, dict]:
    return td3_update(state, batch, key, critic_loss, actor_loss)


def act(state: TD3State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    action = policy(state.actor, state, obs)
    if deterministic:
        return action
    noise = state.config.expl_noise * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(action + noise, -1.0, 1.0)


def policy_params(state: TD3State) -> dict:
    return state.actor
