"""EDAC, Ensemble-Diversified Actor-Critic (An et al. 2021, "Uncertainty-Based Offline
Reinforcement Learning with Diversified Q-Ensemble").

SAC-N (`baselines/sac_n.py`) plus an ensemble-similarity (ES) penalty on the critics that
diversifies the gradients of the N critics with respect to the action at dataset pairs (s, a):

    ES = E_(s,a)~D [ 1/(N-1) * sum_{i != j} <g_i(s, a), g_j(s, a)> ],
    g_i = grad_a Q_i(s, a) / (||grad_a Q_i(s, a)|| + 1e-10)

(the normalized gradients of the authors' code and CORL, so each term is a cosine similarity:
ES lies in [-N/(N-1), N], N when all critics' action gradients are aligned). The critic loss
is SAC-N's plus eta * ES; it lets a small ensemble penalize out-of-distribution actions as
strongly as SAC-N's large one. The TD loss, the actor and temperature losses, the optimizers and
the networks are sac.py's (`sac.critic_loss`, `sac.actor_loss`, `sac.temperature_loss`,
`sac.optimizers`, `sac.networks`); this module adds only the ES term.

Scale: sac.py's TD loss is 0.5 * sum_i MSE_i, so the ES term enters as 0.5 * eta * ES and the
critic loss is exactly half the paper's / CORL's sum_i MSE_i + eta * ES: the same update under
Adam (up to its epsilon), and eta keeps its published meaning. With eta = 0 this is SAC-N.

Defaults are CORL's `edac.py` (the authors' settings): SAC-N's (3x256, Adam 3e-4, batch 256,
gamma 0.99, tau 5e-3, EDAC initialization, no normalization, 3M updates) with N=10, eta=1.
N and eta are per dataset (CORL and tinkoff-ai/lb-sac configs): halfcheetah N=10 (eta 1;
medium-expert 5), walker2d N=10 (eta 1; medium-expert 5), hopper N=50 (eta 1). Select with
`--set num_critics=50 --set eta=1.0`.

Differences: those of sac_n.py (update order, temperature loss, log-std squashing, kernel
initialization, and the exact tanh log-probability log(1 - tanh(u)^2) where CORL's EDAC and the
authors' code use log(1 - tanh(u)^2 + 1e-6), which part only where the actor saturates); and
the authors' code computes ES on a random subset of min(N, |A|) critics (e.g. 6 of 10 on
halfcheetah), where CORL, and this module, use all N.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import CriticEnsemble
from offbench_baselines import sac, sac_n

MODES = ("offline", "o2o")
NORM_EPS = 1e-10  # added to the gradient norms, as in the authors' code and CORL


@dataclasses.dataclass(frozen=True)
class Config(sac_n.Config):
    eta: float = 1.0  # weight of the ensemble-similarity term, per dataset


class EDACState(struct.PyTreeNode):
    sac: sac.SACState  # SAC-N's state: networks, optimizers, temperature
    config: Config = struct.field(pytree_node=False)


def action_gradients(critic_params, state: sac.SACState, obs: jax.Array,
                     action: jax.Array) -> jax.Array:
    """grad_a Q_i(s, a) for every critic i: shape (N, B, action_size)."""
    cfg = state.config
    # the same parameters as sac.networks' critic; member i sees only actions[i], so the gradient
    # of the sum of all outputs holds every member's action gradient (one backward pass)
    net = CriticEnsemble(cfg.hidden, cfg.num_critics, cfg.critic_layer_norm, member_actions=True)
    actions = jnp.broadcast_to(action, (cfg.num_critics, *action.shape))
    return jax.grad(lambda a: net.apply(critic_params, obs, a).sum())(actions)


def _norm(x: jax.Array) -> jax.Array:
    """||x|| over the last axis, with gradient 0 (not NaN) at x = 0."""
    squared = jnp.sum(x * x, axis=-1, keepdims=True)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def diversity_loss(critic_params, state: sac.SACState, batch: Transition) -> jax.Array:
    """ES: the batch mean of sum_{i != j} cos(grad_a Q_i, grad_a Q_j) / (N - 1)."""
    n = state.config.num_critics
    grads = action_gradients(critic_params, state, batch.obs, batch.action)
    grads = grads / (_norm(grads) + NORM_EPS)
    similarity = jnp.einsum("iba,jba->bij", grads, grads)
    off_diagonal = similarity * (1.0 - jnp.eye(n, dtype=similarity.dtype))
    return jnp.mean(off_diagonal.sum(axis=(1, 2))) / (n - 1)


def critic_loss(critic_params, state: EDACState, batch: Transition, key: jax.Array):
    """SAC-N's TD loss (0.5 * sum_i MSE_i) + 0.5 * eta * ES."""
    td_loss, info = sac.critic_loss(critic_params, state.sac, batch, key)
    es = diversity_loss(critic_params, state.sac, batch)
    loss = td_loss + 0.5 * state.config.eta * es
    return loss, {**info, "diversity_loss": es, "critic_total_loss": loss}


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None,
         dataset=None) -> EDACState:
    config = config or Config()
    if config.num_critics < 2:
        raise ValueError(f"EDAC needs num_critics >= 2, got {config.num_critics}")
    return EDACState(sac=sac_n.init(key, spec, config, dataset), config=config)


def update(state: EDACState, batch: Transition, key: jax.Array) -> tuple[EDACState, dict]:
    """sac.update's steps (critic, actor, temperature) with EDAC's critic loss."""
    s = state.sac
    cfg = s.config
    actor_tx, critic_tx, alpha_tx = sac.optimizers(cfg)
    k_critic, k_actor = jax.random.split(key)

    grads, critic_info = jax.grad(critic_loss, has_aux=True)(s.critic, state, batch, k_critic)
    updates, critic_opt = critic_tx.update(grads, s.critic_opt, s.critic)
    critic = optax.apply_updates(s.critic, updates)
    target_critic = optax.incremental_update(critic, s.target_critic, cfg.tau)
    s = s.replace(critic=critic, critic_opt=critic_opt, target_critic=target_critic)

    grads, actor_info = jax.grad(sac.actor_loss, has_aux=True)(s.actor, s, batch, k_actor)
    updates, actor_opt = actor_tx.update(grads, s.actor_opt, s.actor)
    actor = optax.apply_updates(s.actor, updates)

    entropy = jax.lax.stop_gradient(actor_info["entropy"])
    goal = sac.target_entropy(cfg, s.spec)
    alpha_grad = jax.grad(sac.temperature_loss)(s.log_alpha, entropy, goal)
    updates, alpha_opt = alpha_tx.update(alpha_grad, s.alpha_opt, s.log_alpha)
    log_alpha = optax.apply_updates(s.log_alpha, updates)

    s = s.replace(actor=actor, actor_opt=actor_opt, log_alpha=log_alpha, alpha_opt=alpha_opt,
                  steps=s.steps + 1)
    metrics = {**critic_info, **actor_info, "alpha": jnp.exp(log_alpha),
               "temperature_loss": sac.temperature_loss(log_alpha, entropy, goal)}
    return state.replace(sac=s), metrics


def act(state: EDACState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    return sac.act(state.sac, obs, key, deterministic)


def policy_params(state: EDACState) -> dict:
    return sac.policy_params(state.sac)


def q_values(state: EDACState, obs: jax.Array, action: jax.Array) -> jax.Array:
    return sac.q_values(state.sac, obs, action)
