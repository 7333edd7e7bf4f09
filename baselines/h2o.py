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
- Bellman loss, per critic: the mean over the real rows of (Q(s,a) - y)^2 plus the mean over
  the sim rows of w (Q(s,a) - y)^2, w = clip(p_real / p_sim, w_min, w_max) = clip(exp(-u))
  (importance weights from the sim to the real dynamics); y is SAC's target (sac.td_target).
- Dynamics-aware penalty, per critic: cql_alpha * clip(T log sum over sim rows of
  exp((Q(s_b, a_b) + log omega_b) / T) - mean over real rows of Q(s, a)), omega = u+ / sum u+ over
  the sim rows with u+ = clip(u, u_min, u_max): Q is pushed down on the simulated pairs whose
  dynamics gap is largest (a soft maximum over them, T = cql_temp) and up on real data.
- Actor and temperature: SAC's steps (sac.actor_temperature_step) on the whole batch.

Defaults: the authors' code (t6-thu/H2O, SimpleSAC/sim2real_sac.py get_default_config and
sim2real_sac_main.py): 2x256 nets without orthogonal initialization, Adam 3e-4 for actor,
critics and temperature, target entropy 0, no entropy in the backup, cql_min_q_weight 0.01
(`cql_alpha`), T 1, the penalty clipped to [-1000, 1000], importance weights clipped to
[1e-5, 1], u clipped to [1e-45, 10], discriminators 2x256 with Adam 3e-4 and input noise 0.1,
half of each minibatch from the dataset (batch_ratio 0.5).

Where ours differs from the authors' code: u is the discriminators' log-ratio at the observed
s' (the code averages it over 10 noisy copies of s'); u's floor is 1e-30 (1e-45 is a float32
denormal); each discriminator outputs one logit trained by sigmoid cross-entropy (the code: two
softmax logits, D_sas's added to D_sa's); the temperature loss is CQL's alpha (H - target)
(the code: log alpha); one discriminator step per update; the actor's Flax initialization.
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
    hidden: tuple[int, ...] = (256, 256)  # policy_arch, qf_arch
    actor_lr: float = 3e-4  # policy_lr
    temperature_lr: float = 3e-4
    target_entropy: float | None = 0.0
    orthogonal_init: bool = False
    cql_alpha: float = 0.01  # cql_min_q_weight
    cql_clip_diff_min: float = -1000.0
    cql_clip_diff_max: float = 1000.0
    offline_ratio: float = 0.5  # batch_ratio; read by the hybrid loop
    disc_hidden: tuple[int, ...] = (256, 256)
    disc_lr: float = 3e-4
    disc_noise: float = 0.1  # noise_std_discriminator, on discriminator inputs (training)
    w_min: float = 1e-5  # clip_dynamics_ratio_min
    w_max: float = 1.0
    u_min: float = 1e-30  # sim_q_coeff_min (the code: 1e-45)
    u_max: float = 10.0  # sim_q_coeff_max

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
    if not 0 < config.u_min <= config.u_max:
        raise ValueError("need 0 < u_min <= u_max")
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
    target = jax.lax.stop_gradient(sac.td_target(state, batch, key))
    q = critic_net.apply(critic_params, batch.obs, batch.action)  # (N, B)
    real = batch.extra["from_dataset"]
    sim = 1.0 - real
    n_real, n_sim = jnp.maximum(real.sum(), 1.0), jnp.maximum(sim.sum(), 1.0)
    weight = importance_weights(state, batch)
    squared = (q - target) ** 2
    td_loss = ((squared * real).sum(-1) / n_real + (weight * squared * sim).sum(-1) / n_sim).sum()
    gap = jax.lax.stop_gradient(log_gap(state, batch.obs, batch.action, batch.next_obs))
    # log omega over the sim rows (-inf on real ones), omega = u+ / sum u+
    log_u = jnp.where(sim > 0, jnp.log(jnp.clip(gap, cfg.u_min, cfg.u_max)), -jnp.inf)
    log_omega = log_u - jax.scipy.special.logsumexp(log_u)
    soft_max = cfg.cql_temp * jax.scipy.special.logsumexp((q + log_omega) / cfg.cql_temp, -1)
    diff = jnp.clip(soft_max - (q * real).sum(-1) / n_real, cfg.cql_clip_diff_min,
                    cfg.cql_clip_diff_max)
    # an all-real batch has no sim term
    penalty = jnp.where(sim.sum() > 0, cfg.cql_alpha * diff.sum(), 0.0)
    loss = td_loss + penalty
    return loss, {"critic_loss": loss, "td_loss": td_loss, "h2o_penalty": penalty,
                  "q_mean": q.mean(), "target_mean": target.mean(),
                  "sim_weight_mean": (weight * sim).sum() / n_sim,
                  "sim_gap_mean": (gap * sim).sum() / n_sim,
                  "real_gap_mean": (gap * real).sum() / n_real}


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
