"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC: algorithms and applications").

Automatic temperature, clipped double-Q, and the options later online methods build on: a
critic ensemble of N with a random subset of M for the target (REDQ, RLPD), LayerNorm in critic
and/or actor (RLPD), and the actor trained on the min or the mean of the ensemble. The
update-to-data ratio (UTD) is the loop's: it calls `update` UTD times per env step.

Defaults are the paper's MuJoCo settings: 2x256 ReLU nets, Adam 3e-4, batch 256, gamma 0.99,
tau 0.005, target entropy -|A|, twin critics with min.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import CriticEnsemble, TanhGaussianActor, tanh_gaussian_sample

MODES = ("online",)


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_size
    num_critics: int = 2  # N
    num_target_critics: int = 2  # M: the target is the min over a random subset of M of N
    actor_q: str = "min"  # "min" (SAC) or "mean" (REDQ/RLPD) over the ensemble
    critic_layer_norm: bool = False
    actor_layer_norm: bool = False
    backup_entropy: bool = True  # subtract alpha * log pi(a'|s') in the target


class SACState(struct.PyTreeNode):
    actor: dict
    critic: dict
    target_critic: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    steps: jax.Array
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def networks(config: Config, spec: EnvSpec) -> tuple[TanhGaussianActor, CriticEnsemble]:
    actor = TanhGaussianActor(config.hidden, spec.action_size, config.actor_layer_norm)
    critic = CriticEnsemble(config.hidden, config.num_critics, config.critic_layer_norm)
    return actor, critic


def optimizers(config: Config) -> tuple[optax.GradientTransformation, ...]:
    return (optax.adam(config.actor_lr), optax.adam(config.critic_lr),
            optax.adam(config.temperature_lr))


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> SACState:
    config = config or Config()
    if not 1 <= config.num_target_critics <= config.num_critics:
        raise ValueError(f"num_target_critics must be in [1, num_critics={config.num_critics}]")
    if config.actor_q not in ("min", "mean"):
        raise ValueError(f"actor_q must be 'min' or 'mean', got '{config.actor_q}'")
    actor_net, critic_net = networks(config, spec)
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((1, spec.observation_size))
    act = jnp.zeros((1, spec.action_size))
    actor = actor_net.init(k_actor, obs)
    critic = critic_net.init(k_critic, obs, act)
    log_alpha = jnp.log(jnp.asarray(config.init_temperature, jnp.float32))
    actor_tx, critic_tx, alpha_tx = optimizers(config)
    return SACState(actor=actor, critic=critic, target_critic=critic, log_alpha=log_alpha,
                    actor_opt=actor_tx.init(actor), critic_opt=critic_tx.init(critic),
                    alpha_opt=alpha_tx.init(log_alpha), steps=jnp.zeros((), jnp.int32),
                    config=config, spec=spec)


def target_entropy(config: Config, spec: EnvSpec) -> float:
    if config.target_entropy is None:
        return -float(spec.action_size)
    return config.target_entropy


def td_target(state: SACState, batch: Transition, key: jax.Array) -> jax.Array:
    """The soft TD target r + gamma * (1 - terminal) * (min over a random subset of M target
    critics of Q'(s', a') [- alpha * log pi(a'|s') with backup_entropy]), a' ~ pi(.|s')."""
    cfg = state.config
    actor_net, critic_net = networks(cfg, state.spec)
    k_action, k_subset = jax.random.split(key)
    next_action, next_log_prob = tanh_gaussian_sample(
        *actor_net.apply(state.actor, batch.next_obs), k_action)
    next_q = critic_net.apply(state.target_critic, batch.next_obs, next_action)
    subset = jax.random.choice(k_subset, cfg.num_critics, (cfg.num_target_critics,),
                               replace=False)
    next_v = next_q[subset].min(axis=0)
    if cfg.backup_entropy:
        next_v = next_v - jnp.exp(state.log_alpha) * next_log_prob
    return batch.reward + cfg.discount * (1.0 - batch.terminal) * next_v


def critic_loss(critic_params, state: SACState, batch: Transition, key: jax.Array):
    """0.5 * sum over critics of the mean squared TD error against the soft target."""
    _, critic_net = networks(state.config, state.spec)
    target = td_target(state, batch, key)
    q = critic_net.apply(critic_params, batch.obs, batch.action)
    loss = 0.5 * jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=-1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "q_max": q.max(),
                  "target_mean": target.mean()}


def actor_loss(actor_params, state: SACState, batch: Transition, key: jax.Array):
    """E[alpha * log pi(a|s) - Q(s, a)], a ~ pi(.|s), Q = min or mean over the ensemble."""
    actor_net, critic_net = networks(state.config, state.spec)
    action, log_prob = tanh_gaussian_sample(*actor_net.apply(actor_params, batch.obs), key)
    q = critic_net.apply(state.critic, batch.obs, action)
    q = q.min(axis=0) if state.config.actor_q == "min" else q.mean(axis=0)
    alpha = jnp.exp(state.log_alpha)
    loss = jnp.mean(alpha * log_prob - q)
    return loss, {"actor_loss": loss, "entropy": -log_prob.mean()}


def temperature_loss(log_alpha, entropy: jax.Array, target: float):
    """-alpha * (target entropy - entropy): raises alpha while entropy is below target."""
    return jnp.exp(log_alpha) * (entropy - target)


def critic_step(state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
    """One Adam step of the critics on the soft TD loss, then the Polyak target update."""
    _, critic_tx, _ = optimizers(state.config)
    grads, info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch, key)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    target_critic = optax.incremental_update(critic, state.target_critic, state.config.tau)
    return state.replace(critic=critic, critic_opt=critic_opt, target_critic=target_critic), info


def actor_temperature_step(state: SACState, batch: Transition, key: jax.Array
                           ) -> tuple[SACState, dict]:
    """One Adam step of the actor (against the current critics), then of the temperature."""
    cfg = state.config
    actor_tx, _, alpha_tx = optimizers(cfg)
    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch, key)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    entropy = jax.lax.stop_gradient(actor_info["entropy"])
    goal = target_entropy(cfg, state.spec)
    alpha_grad = jax.grad(temperature_loss)(state.log_alpha, entropy, goal)
    updates, alpha_opt = alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, updates)
    state = state.replace(actor=actor, actor_opt=actor_opt, log_alpha=log_alpha,
                          alpha_opt=alpha_opt)
    return state, {**actor_info, "alpha": jnp.exp(log_alpha),
                   "temperature_loss": temperature_loss(log_alpha, entropy, goal)}


def update(state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
    k_critic, k_actor = jax.random.split(key)
    state, critic_info = critic_step(state, batch, k_critic)
    state, actor_info = actor_temperature_step(state, batch, k_actor)
    return state.replace(steps=state.steps + 1), {**critic_info, **actor_info}


def act(state: SACState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    actor_net, _ = networks(state.config, state.spec)
    mean, log_std = actor_net.apply(state.actor, obs)
    if deterministic:
        return jnp.tanh(mean)
    return tanh_gaussian_sample(mean, log_std, key)[0]


def policy_params(state: SACState) -> dict:
    """The actor's parameters: all `act` needs besides the config (kept as behaviour policies)."""
    return state.actor


def q_values(state: SACState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of every critic (not the targets), shape (num_critics, batch)."""
    return networks(state.config, state.spec)[1].apply(state.critic, obs, action)
