"""H2O (Niu et al. 2022, "When to Trust Your Simulator: Dynamics-Aware Hybrid Offline-and-Online
Reinforcement Learning"): SAC/CQL on a fixed dataset from the REAL system plus online transitions
from a SIMULATOR whose dynamics differ, trusting each simulated transition by a learned estimate
of the dynamics gap. Run it on a hybrid sim-to-real task (offbench/hybrid.py):

    offbench run h2o halfcheetah-medium@sim:gravity=0.5 --mode hybrid --online-steps 1000000

Each minibatch holds dataset (real) rows and env (sim) rows, told apart by
`batch.extra["from_dataset"]` (the loop adds it because `BATCH_FIELDS` asks for it).

- Discriminators: D_sa(s, a) and D_sas(s, a, s') output the logit of "real"; each is trained by
  binary cross-entropy on the batch (real rows label 1, sim rows 0), inputs perturbed with
  Gaussian noise of std `disc_noise` (H2O's code perturbs them too). By Bayes' rule
  log p_real(s'|s,a) / p_sim(s'|s,a) = logit D_sas(s,a,s') - logit D_sa(s,a); the dynamics gap
  is its negative, u(s,a,s') = log p_sim / p_real (large where the simulator is wrong).
- Bellman loss: per critic, the mean over the batch of weight * (Q(s,a) - y)^2 with weight 1 on
  real rows and w = clip(p_real / p_sim, w_min, w_max) = clip(exp(-u)) on sim rows (importance
  weights from the sim to the real dynamics); y is SAC's target (sac.td_target).
- Dynamics-aware penalty: cql_alpha * (sum over sim rows of omega(s) * softmax_a Q(s, .) -
  mean over real rows of Q(s, a_data)), softmax_a Q the soft maximum of CQL (cql.soft_max_q),
  omega a softmax of u over the batch's sim rows: Q is pushed down most on simulated states
  whose dynamics gap is largest, and up on real data.
- Actor and temperature: SAC's steps (sac.actor_temperature_step) on the whole batch.

Defaults: SAC/CQL settings of cql.py (CORL's CQL: 3x256 nets, critic Adam 3e-4) with H2O's: half
of each minibatch from the dataset (offline_ratio 0.5), cql_alpha 0.1 (the authors' Sim2realSAC
default as we read it), no entropy in the backup, discriminators 2x256 with Adam 3e-4. Where ours
differs: omega is a softmax of u over the sim rows (the paper normalizes u itself); the clip range
[w_min, w_max] = [1e-4, 1] and disc_noise 0.1 are ours; actor Adam 3e-5 as CORL's CQL (H2O's
code: 3e-4); one discriminator step per update.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP
from offbench_baselines import cql, sac
from offbench_baselines.cql import CQLState, act, policy_params

MODES = ("hybrid",)
BATCH_FIELDS = ("from_dataset",)  # the loop marks dataset (real) rows with 1
__all__ = ["Config", "MODES", "BATCH_FIELDS", "init", "update", "act", "policy_params",
           "log_gap", "importance_weights"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    cql_alpha: float = 0.1
    offline_ratio: float = 0.5  # read by the hybrid loop
    disc_hidden: tuple[int, ...] = (256, 256)
    disc_lr: float = 3e-4
    disc_noise: float = 0.1  # std of the Gaussian noise on discriminator inputs (training)
    w_min: float = 1e-4
    w_max: float = 1.0


class H2OState(CQLState):
    d_sa: dict
    d_sas: dict
    d_sa_opt: optax.OptState
    d_sas_opt: optax.OptState


def _disc(config: Config) -> MLP:
    return MLP(config.disc_hidden, 1)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> H2OState:
    config = config or Config()
    if not 0 < config.w_min <= config.w_max:
        raise ValueError("need 0 < w_min <= w_max")
    k_cql, k_sa, k_sas = jax.random.split(key, 3)
    base = cql.init(k_cql, spec, config)
    o, a = spec.observation_size, spec.action_size
    d_sa = _disc(config).init(k_sa, jnp.zeros((1, o + a)))
    d_sas = _disc(config).init(k_sas, jnp.zeros((1, 2 * o + a)))
    tx = optax.adam(config.disc_lr)
    return H2OState(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                    d_sa=d_sa, d_sas=d_sas, d_sa_opt=tx.init(d_sa), d_sas_opt=tx.init(d_sas))


def _logits(params: dict, state: H2OState, x: jax.Array) -> jax.Array:
    return _disc(state.config).apply(params, x)[..., 0]


def log_gap(state: H2OState, obs: jax.Array, action: jax.Array, next_obs: jax.Array
            ) -> jax.Array:
    """u = log p_sim(s'|s,a) / p_real(s'|s,a) estimated by the discriminators, per row."""
    sa = jnp.concatenate([obs, action], -1)
    sas = jnp.concatenate([obs, action, next_obs], -1)
    return _logits(state.d_sa, state, sa) - _logits(state.d_sas, state, sas)


def importance_weights(state: H2OState, batch: Transition) -> jax.Array:
    """Bellman weights: 1 on real rows, clip(p_real / p_sim) on sim rows (no gradient)."""
    gap = log_gap(state, batch.obs, batch.action, batch.next_obs)
    w = jnp.clip(jnp.exp(-gap), state.config.w_min, state.config.w_max)
    real = batch.extra["from_dataset"]
    return jax.lax.stop_gradient(jnp.where(real > 0, 1.0, w))


def discriminator_loss(params: tuple[dict, dict], state: H2OState, batch: Transition,
                       key: jax.Array) -> tuple[jax.Array, dict]:
    """Binary cross-entropy of both discriminators, real rows labelled 1 and sim rows 0."""
    d_sa, d_sas = params
    label = batch.extra["from_dataset"]
    sa = jnp.concatenate([batch.obs, batch.action], -1)
    sas = jnp.concatenate([batch.obs, batch.action, batch.next_obs], -1)
    k_sa, k_sas = jax.random.split(key)
    sa = sa + state.config.disc_noise * jax.random.normal(k_sa, sa.shape)
    sas = sas + state.config.disc_noise * jax.random.normal(k_sas, sas.shape)
    loss_sa = optax.sigmoid_binary_cross_entropy(_logits(d_sa, state, sa), label).mean()
    loss_sas = optax.sigmoid_binary_cross_entropy(_logits(d_sas, state, sas), label).mean()
    return loss_sa + loss_sas, {"d_sa_loss": loss_sa, "d_sas_loss": loss_sas}


def discriminator_step(state: H2OState, batch: Transition, key: jax.Array
                       ) -> tuple[H2OState, dict]:
    if "from_dataset" not in batch.extra:
        raise ValueError("h2o needs batch.extra['from_dataset'] (run it in --mode hybrid)")
    tx = optax.adam(state.config.disc_lr)
    (g_sa, g_sas), info = jax.grad(discriminator_loss, has_aux=True)(
        (state.d_sa, state.d_sas), state, batch, key)
    up_sa, d_sa_opt = tx.update(g_sa, state.d_sa_opt, state.d_sa)
    up_sas, d_sas_opt = tx.update(g_sas, state.d_sas_opt, state.d_sas)
    return state.replace(d_sa=optax.apply_updates(state.d_sa, up_sa),
                         d_sas=optax.apply_updates(state.d_sas, up_sas),
                         d_sa_opt=d_sa_opt, d_sas_opt=d_sas_opt), info


def critic_loss(critic_params, state: H2OState, batch: Transition, key: jax.Array):
    """Weighted TD loss plus the dynamics-gap-weighted conservative penalty (docstring)."""
    cfg = state.config
    _, critic_net = sac.networks(cfg, state.spec)
    k_target, k_cql = jax.random.split(key)
    target = jax.lax.stop_gradient(sac.td_target(state, batch, k_target))
    q = critic_net.apply(critic_params, batch.obs, batch.action)  # (N, B)
    weight = importance_weights(state, batch)
    td_loss = jnp.mean(weight * (q - target) ** 2, axis=-1).sum()
    real = batch.extra["from_dataset"]
    sim = 1.0 - real
    gap = jax.lax.stop_gradient(log_gap(state, batch.obs, batch.action, batch.next_obs))
    omega = jax.nn.softmax(jnp.where(sim > 0, gap, -jnp.inf))
    omega = jnp.where(jnp.any(sim > 0), omega, 0.0)  # an all-real batch has no sim term
    soft_max, info = cql.soft_max_q(critic_params, state, batch, q, k_cql)
    push_down = (soft_max * omega).sum(-1)
    push_up = (q * real).sum(-1) / jnp.maximum(real.sum(), 1.0)
    penalty = cfg.cql_alpha * (push_down - push_up).sum()
    loss = td_loss + penalty
    n_sim = jnp.maximum(sim.sum(), 1.0)
    return loss, {"critic_loss": loss, "td_loss": td_loss, "h2o_penalty": penalty,
                  "q_mean": q.mean(), "target_mean": target.mean(),
                  "sim_weight_mean": (weight * sim).sum() / n_sim,
                  "sim_gap_mean": (gap * sim).sum() / n_sim,
                  "real_gap_mean": (gap * real).sum() / jnp.maximum(real.sum(), 1.0), **info}


def update(state: H2OState, batch: Transition, key: jax.Array) -> tuple[H2OState, dict]:
    k_disc, k_critic, k_actor = jax.random.split(key, 3)
    state, disc_info = discriminator_step(state, batch, k_disc)
    _, critic_tx, _ = sac.optimizers(state.config)
    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch,
                                                            k_critic)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    state = state.replace(critic=critic, critic_opt=critic_opt,
                          target_critic=optax.incremental_update(critic, state.target_critic,
                                                                 state.config.tau))
    state, actor_info = sac.actor_temperature_step(state, batch, k_actor)
    return state.replace(steps=state.steps + 1), {**disc_info, **critic_info, **actor_info}
