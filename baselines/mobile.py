"""MOBILE (Sun et al. 2023, "Model-Bellman Inconsistency for Model-based Offline Reinforcement
Learning").

MOPO's machinery (baselines/mopo.py: the dynamics ensemble fitted in `init`, h-step policy
rollouts from dataset states into the on-device model buffer, 5% real rows) with the penalty
moved from the model's predicted std to the disagreement of the Bellman targets the model's
members imply. For each row (s, a) of the minibatch, each elite e gives `num_samples` next
states s'_{e,j} ~ N(mu_e(s, a), sigma_e(s, a)); with a'_{e,j} ~ pi(s'_{e,j}):

    T_e(s, a) = 1/J sum_j min_i Q'_i(s'_{e,j}, a'_{e,j}),   u(s, a) = std_e T_e(s, a)
    y = clip(r - beta u(s, a) + gamma (1 - d) min_i Q'_i(s', a'), 0, inf)

(std over the elites with Bessel's correction, as torch's; u = 0 on the real rows; a
deterministic backup, i.e. no entropy term in y). Model rollouts store the model's own reward.
The actor and temperature steps are SAC's (baselines/sac.py).

Defaults: OfflineRL-Kit's run_example/run_mobile.py and policy/model_based/mobile.py
(yihaosun1124/OfflineRL-Kit, the MOBILE authors' code): MOPO's SAC and rollout settings,
num_samples 10, deterministic backup, 2 critics, the ensemble trained for at most 30 epochs
(dynamics_max_epochs), h = 1 and beta = 1.5 (the script's defaults, walker2d-medium-expert's).
Per-dataset (h, beta), `SETTINGS` (run_mobile.py's suggested values for D4RL v2), applied with
`--set rollout_length=H --set penalty_coef=B`; hopper-medium also turns the automatic
temperature off there (alpha fixed at 0.2), which offbench does not offer (declared).

Declared differences from OfflineRL-Kit: MOPO's (rollouts spread over updates, the ensemble's
and sac.py's differences, no actor cosine annealing, alpha not clipped to [0, 1]); the critic
loss is 0.5 x sum over critics of the mean squared error (OfflineRL-Kit: the mean over critics
and rows); hopper-medium's fixed alpha not available; the penalty's next actions and the
target's are separate samples of the policy (as the reference).

Cost: the penalty runs the actor and both target critics on batch x elites x num_samples =
12,800 next states per update (50 times SAC's batch), which dominates MOBILE's update on a
CPU. The divergence guard skips the model buffer as MOPO's (mopo.py, UNGUARDED_STATE).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from offbench.algorithms import EnvSpec, Transition
from offbench.models import ensemble
from offbench.networks import tanh_gaussian_sample
from offbench_baselines import mopo, sac

MODES = ("offline",)
UNGUARDED_STATE = mopo.UNGUARDED_STATE

# (rollout_length h, penalty_coef beta): OfflineRL-Kit run_mobile.py's suggested values (v2)
SETTINGS = {
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 5.0), "walker2d-random": (5, 2.0),
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 1.5), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.1), "hopper-medium-replay": (5, 0.1),
    "walker2d-medium-replay": (1, 0.5), "halfcheetah-medium-expert": (5, 2.0),
    "hopper-medium-expert": (5, 1.5), "walker2d-medium-expert": (1, 1.5),
}


@dataclasses.dataclass(frozen=True)
class Config(mopo.Config):
    backup_entropy: bool = False  # deterministic backup
    rollout_length: int = 1  # h, per dataset (SETTINGS)
    penalty_coef: float = 1.5  # beta, per dataset (SETTINGS)
    model_max_epochs: int | None = 30
    num_samples: int = 10  # next states per elite for the penalty


def bellman_penalty(state: mopo.MOPOState, obs: jax.Array, action: jax.Array, key: jax.Array
                    ) -> jax.Array:
    """u(s, a) of the module docstring, (B,): the std over elites of the mean over samples of
    min_i Q'_i(s', a'), s' drawn from each elite, a' ~ pi(s')."""
    model, cfg = state.model, state.config
    mean, std = ensemble.predict(model, obs, action)
    mean, std = mean[model.elites], std[model.elites]  # (K, B, obs + 1)
    k_model, k_action = jax.random.split(key)
    noise = jax.random.normal(k_model, (cfg.num_samples, *mean.shape), mean.dtype)
    next_obs = obs + (mean + std * noise)[..., :-1]  # (J, K, B, obs)
    flat = next_obs.reshape(-1, obs.shape[-1])
    actor_net, critic_net = sac.networks(state.sac.config, state.sac.spec)
    next_action, _ = tanh_gaussian_sample(*actor_net.apply(state.sac.actor, flat), k_action)
    q = critic_net.apply(state.sac.target_critic, flat, next_action).min(axis=0)
    return q.reshape(next_obs.shape[:-1]).mean(axis=0).std(axis=0, ddof=1)


def critic_loss(critic_params, state: sac.SACState, batch: Transition, key: jax.Array):
    """sac.critic_loss with the target clipped below at 0 (MOBILE's torch.clamp(y, 0))."""
    _, critic_net = sac.networks(state.config, state.spec)
    target = jnp.maximum(sac.td_target(state, batch, key), 0.0)
    q = critic_net.apply(critic_params, batch.obs, batch.action)
    loss = 0.5 * jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=-1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "q_max": q.max(),
                  "target_mean": target.mean()}


def critic_step(state: sac.SACState, batch: Transition, key: jax.Array):
    _, critic_tx, _ = sac.optimizers(state.config)
    grads, info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch, key)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    target_critic = optax.incremental_update(critic, state.target_critic, state.config.tau)
    return state.replace(critic=critic, critic_opt=critic_opt, target_critic=target_critic), info


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key: jax.Array, spec: EnvSpec, config: Config, dataset) -> mopo.MOPOState:
    return mopo.init_state(key, spec, config, dataset, None)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None,
         dataset=None) -> mopo.MOPOState:
    if dataset is None:
        raise ValueError("a model-based algorithm fits its model in init: pass the dataset")
    return _init(key, spec, config or Config(), dataset)


def update(state: mopo.MOPOState, batch: Transition, key: jax.Array
           ) -> tuple[mopo.MOPOState, dict]:
    real, starts = mopo.sizes(state.config)
    k_roll, k_fake, k_penalty, k_critic, k_actor = jax.random.split(key, 5)
    state, info = mopo.model_step(state, batch.obs[real:real + starts], k_roll, None,
                                  mopo.start_physics(batch.extra, slice(real, real + starts)))
    mixed = mopo.mixed_batch(state, batch, k_fake)
    if state.model is None:  # true dynamics: one deterministic model, every T_e equal, u = 0
        penalty = jnp.zeros_like(mixed.reward)
    else:
        penalty = bellman_penalty(state, mixed.obs, mixed.action, k_penalty).at[:real].set(0.0)
    mixed = mixed.replace(reward=mixed.reward - state.config.penalty_coef * penalty)
    sac_state, critic_info = critic_step(state.sac, mixed, k_critic)
    sac_state, actor_info = sac.actor_temperature_step(sac_state, mixed, k_actor)
    state = state.replace(sac=sac_state.replace(steps=sac_state.steps + 1))
    info = {k: v for k, v in info.items() if k != "model_penalty"}  # MOPO's, 0 here
    return state, {**critic_info, **actor_info, **info,
                   "bellman_penalty": penalty[real:].mean(), **mopo.model_metrics(state)}


act = mopo.act
policy_params = mopo.policy_params
q_values = mopo.q_values
