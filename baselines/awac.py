"""Advantage-Weighted Actor-Critic (Nair, Gupta, Dalal & Levine 2020, "AWAC: accelerating
online reinforcement learning with offline datasets"), as in CORL (algorithms/offline/awac.py,
algorithms/finetune/awac.py).

- twin Q onto r + gamma * (1 - done) * min_i Q_target_i(s', a'), a' ~ pi(.|s') (clipped to
  [-1, 1]); no entropy term:  L_Q = sum_i E[(Q_i(s, a) - y)^2];
- the actor by advantage-weighted regression on the dataset's actions:
  L_pi = -E[min(exp(A(s, a) / lambda), 100) * log pi(a|s)],  A(s, a) = min Q(s, a) - min Q(s, a~),
  where a~ ~ pi(.|s) is ONE sampled (and clipped) action, not the mean, and Q is the online
  critic just updated (CORL's order: critic step, actor step, Polyak target update).

What differs from IQL: the critic's target bootstraps on the policy's own action at s' (policy
evaluation) instead of an expectile V(s'), and the advantage's baseline is Q at a policy action
instead of V(s); there is no value network. The AWR loss, the Gaussian actor, the twin-Q TD
loss and `act` are `baselines/iql.py`'s.

Actor, as CORL's: N(mu(s), diag(exp(log_std))^2) with an UNSQUASHED linear mean (no tanh), a
learned state-independent log-std (initialized at 0, clipped to [-20, 2]); samples are clipped
to [-1, 1]; the deterministic action is the mean (clipped to [-1, 1]; CORL leaves that to the
env). Defaults are CORL's locomotion configs (configs/offline/awac/{halfcheetah,hopper,
walker2d}/*.yaml, all alike): 3 hidden layers of 256 for actor and critics (CORL's
hidden_dim=256 builds three hidden Linear+ReLU layers), Adam 3e-4 for both, batch 256, gamma
0.99, tau 0.005, lambda 0.3333 (the configs' literal value, kept so that updates match CORL's
to round-off; the script's own default, 1.0, is overridden by every config), weights clipped
at 100 (exp_adv_max), observations standardized by the harness (+1e-3 on the std, as CORL),
rewards unchanged (normalize_reward=False). CORL's AntMaze configs use lambda 0.1 and IQL's
reward normalization; we have no AntMaze tasks yet. The paper's own (rlkit) settings differ:
4x256 policy with log-std in [-6, 0], 2x256 critics, batch-normalized weights.

Where ours differ from CORL's: Flax's default initialization (PyTorch's uniform in CORL); the
deterministic action is clipped to [-1, 1]; in O2O a fixed offline ratio (below).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench_baselines.iql import (
    GaussianActor,
    act,
    actor_net,
    awr_loss,
    critic_net,
    gaussian_sample,
    policy_params,
    q_values,
    twin_td_loss,
)

MODES = ("offline", "o2o")
# O2O: AWAC was designed for fine-tuning; CORL's algorithms/finetune/awac.py keeps the offline
# settings and appends env transitions to the buffer holding the dataset (the dataset's share
# shrinks as the buffer grows); our loop keeps a fixed --offline-ratio instead.
__all__ = ["Config", "MODES", "init", "update", "act", "policy_params", "q_values",
           "GaussianActor", "critic_loss", "actor_loss"]


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    awac_lambda: float = 0.3333  # temperature: weights exp(adv / lambda); CORL's locomotion value
    max_weight: float = 100.0  # exp-advantage weights are clipped here (CORL's exp_adv_max)
    tanh_mean: bool = False  # actor mean = MLP(s), unsquashed
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)


class AWACState(struct.PyTreeNode):
    actor: dict
    critic: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    steps: jax.Array
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def optimizers(config: Config) -> tuple[optax.GradientTransformation, ...]:
    return optax.adam(config.actor_lr), optax.adam(config.critic_lr)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> AWACState:
    config = config or Config()
    if config.awac_lambda <= 0:
        raise ValueError(f"awac_lambda must be positive, got {config.awac_lambda}")
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((1, spec.observation_size))
    action = jnp.zeros((1, spec.action_size))
    actor = actor_net(config, spec).init(k_actor, obs)
    critic = critic_net(config).init(k_critic, obs, action)
    actor_tx, critic_tx = optimizers(config)
    return AWACState(actor=actor, critic=critic, target_critic=critic,
                     actor_opt=actor_tx.init(actor), critic_opt=critic_tx.init(critic),
                     steps=jnp.zeros((), jnp.int32), config=config, spec=spec)


def policy_q(state: AWACState, critic_params, obs: jax.Array, key: jax.Array) -> jax.Array:
    """min_i Q_i(s, a~) at one action a~ ~ pi(.|s) of the CURRENT actor (state.actor), clipped."""
    action = gaussian_sample(*actor_net(state.config, state.spec).apply(state.actor, obs), key)
    return critic_net(state.config).apply(critic_params, obs, action).min(axis=0)


def critic_loss(critic_params, state: AWACState, batch: Transition, key: jax.Array):
    """Both critics regressed onto r + gamma * (1 - done) * min Q_target(s', a'~pi(s'))."""
    cfg = state.config
    next_q = policy_q(state, state.target_critic, batch.next_obs, key)
    target = batch.reward + cfg.discount * (1.0 - batch.terminal) * next_q
    q = critic_net(cfg).apply(critic_params, batch.obs, batch.action)
    loss = twin_td_loss(q, target)
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean()}


def actor_loss(actor_params, state: AWACState, batch: Transition, key: jax.Array):
    """AWR with advantage min Q(s, a) - min Q(s, a~pi(s)), weights exp(adv / lambda) clipped."""
    q = critic_net(state.config).apply(state.critic, batch.obs, batch.action).min(axis=0)
    adv = q - policy_q(state, state.critic, batch.obs, key)
    return awr_loss(actor_params, state.config, state.spec, batch.obs, batch.action, adv,
                    1.0 / state.config.awac_lambda)


def update(state: AWACState, batch: Transition, key: jax.Array) -> tuple[AWACState, dict]:
    cfg = state.config
    actor_tx, critic_tx = optimizers(cfg)
    k_critic, k_actor = jax.random.split(key)

    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch,
                                                             k_critic)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    state = state.replace(critic=optax.apply_updates(state.critic, updates),
                          critic_opt=critic_opt)

    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch, k_actor)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)
    target_critic = optax.incremental_update(state.critic, state.target_critic, cfg.tau)

    state = state.replace(actor=actor, actor_opt=actor_opt, target_critic=target_critic,
                          steps=state.steps + 1)
    return state, {**critic_info, **actor_info}
