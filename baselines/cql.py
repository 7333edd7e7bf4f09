"""Conservative Q-Learning (Kumar et al. 2020), SAC-based, with the Lagrange variant, and the
Cal-QL calibration (Nakamoto et al. 2023) as an option.

CQL is `baselines/sac.py` (networks, state, soft TD target, actor and temperature losses are
SAC's) plus a conservative regularizer on each critic, "CQL(H)" as in the authors' code
(young-geng/CQL) and CORL:

    cql_alpha * E_s[ temp * logsumexp_j(Q(s, a_j) / temp) - Q(s, a_data) ]

over n uniform actions, n policy actions at s and n policy actions at s' (all evaluated at s),
each importance-corrected by its log-density (uniform: log 0.5^|A|). The critic loss is, per
critic, the mean squared TD error plus that term, summed over critics (CORL's qf1 + qf2 losses).
With `lagrange`, the weight becomes alpha' * cql_alpha, alpha' = clip(exp(log alpha'), 0, 1e6)
trained by Adam on -alpha' * cql_alpha * (gap - target_action_gap): alpha' grows while the gap
exceeds target_action_gap (the paper's min_Q max_{alpha' >= 0} alpha' (gap - tau)).
With `calql`, the Q-values of the policy actions in the regularizer are lower-bounded by the
Monte-Carlo return-to-go of s: max(Q(s, a_pi), mc_return(s)), batch.extra["mc_returns"].

As in the authors' JAX code and CORL, every loss of one update is evaluated at the same
parameters (critic, actor, temperature and alpha' gradients all at the pre-update state).

Defaults: CORL's D4RL locomotion configuration (algorithms/offline/cql.py and its
configs/offline/cql/*): 3x256 ReLU actor and critics, Adam 3e-5 (actor, temperature) and 3e-4
(critics, alpha'), batch 256, gamma 0.99, tau 5e-3, target entropy -|A|, no entropy in the
backup, cql_alpha 10, 10 sampled actions, importance sampling, temp 1, no BC warm-up, states
standardized, rewards as recorded. Per dataset: CORL's hopper-medium config alone turns on
normalize_reward (r * 1000 / return range over whole episodes, then its reward_scale 1.0 and
reward_bias 0.0; the script's own defaults 5.0/-1.0 are overridden), i.e.
normalize_reward_by_returns=true here, set for that dataset in tasks/sweeps/full.toml.

AntMaze: CORL's configs/offline/cql/antmaze/*.yaml (the same in its finetune
configs and Cal-QL's) use the Lagrange variant with target_action_gap 0.8 and cql_alpha 5, the
max-target backup, cql_clip_diff_min -200, Adam 1e-4 for the actor (and temperature), no state
normalization, rewards 10 r - 5 (reward_scale 10, reward_bias -5: Cal-QL's AntMaze convention,
also WSRL's launch scripts') and 5 (CQL) / 4 (Cal-QL) hidden layers of 256. `MAZE_SETTINGS`
(below) are these values, applied by the navigation sweep specs (tasks/sweeps/nav-*.toml) on
the fixed-goal PointMaze data; the network size is left to the spec. Where ours differs:
the actor's log-std is squashed smoothly into [-5, 2] (CORL: a learnable affine map clipped to
[-20, 2]); the actor keeps Flax's default initialization (CORL: PyTorch's, output layer Xavier
with gain 1e-2); temperature loss alpha * (H - target) (CORL: log alpha * (H - target); same
sign, Adam-normalized).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

from offbench import hubl
from offbench.algorithms import EnvSpec, Transition
from offbench.networks import tanh_gaussian_log_prob, tanh_gaussian_sample
from offbench_baselines import sac

MODES = ("offline", "o2o")
# O2O: CORL's algorithms/finetune/cql.py keeps these settings (cql_alpha 10 online too) and
# appends env transitions to the buffer holding the dataset; our loop keeps a fixed
# --offline-ratio instead. Cal-QL's O2O settings are baselines/cal_ql.py.
DATASET_FIELDS = ("mc_returns",)  # used by Cal-QL (calql=True)
# The published AntMaze settings (module docstring) for sparse-reward navigation data: set per
# dataset by the navigation sweep specs, not defaults, so locomotion cells keep their ids.
MAZE_SETTINGS = {"cql_alpha": 5.0, "lagrange": True, "target_action_gap": 0.8,
                 "cql_max_target_backup": True, "cql_clip_diff_min": -200.0, "actor_lr": 1e-4,
                 "temperature_lr": 1e-4, "normalize_obs": False, "reward_scale": 10.0,
                 "reward_bias": -5.0}
LOG_ALPHA_PRIME_INIT = 1.0  # as the authors' code and CORL: Scalar(1.0)
ALPHA_PRIME_MAX = 1e6


@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    # SAC's fields, with CORL's values (CORL's names in comments)
    hidden: tuple[int, ...] = (256, 256, 256)  # q_n_hidden_layers=3; the actor is 3x256 too
    actor_lr: float = 3e-5  # policy_lr
    critic_lr: float = 3e-4  # qf_lr
    temperature_lr: float = 3e-5  # CORL's alpha optimizer uses policy_lr
    tau: float = 5e-3  # soft_target_update_rate
    backup_entropy: bool = False
    # CQL
    cql_alpha: float = 10.0  # weight of the conservative term (cql_min_q_weight)
    cql_n_actions: int = 10  # actions sampled per state and per source
    cql_importance_sample: bool = True
    cql_temp: float = 1.0
    cql_max_target_backup: bool = False  # target: max over n actions a' ~ pi(s') of min Q'
    cql_clip_diff_min: float = -math.inf
    cql_clip_diff_max: float = math.inf
    lagrange: bool = False  # cql_lagrange
    target_action_gap: float = -1.0  # tau of the Lagrange variant (cql_target_action_gap)
    bc_steps: int = 0  # the actor maximizes log pi(a_data|s) for the first bc_steps updates
    orthogonal_init: bool = True  # critics: orthogonal kernels (gain sqrt2, output 1e-2)
    # Cal-QL: policy-action Q in the regularizer >= MC return-to-go. The harness computes
    # mc_returns from the rewards the critic learns, after reward_scale/bias/normalization
    # (offbench/loops/offline.py prepare), so the bound is in the critic's units.
    calql: bool = False
    # Applied by the harness (offbench/loops/offline.py)
    normalize_obs: bool = True  # CORL: normalize=True
    normalize_reward_by_returns: bool = False  # CORL: normalize_reward (False but hopper-medium)
    reward_scale: float = 1.0
    reward_bias: float = 0.0


class CQLState(sac.SACState):
    log_alpha_prime: jax.Array
    alpha_prime_opt: optax.OptState


def orthogonal_critic(critic: dict, key: jax.Array) -> dict:
    """CORL's critic initialization: orthogonal kernels with gain sqrt(2) (hidden layers) and
    1e-2 (output layer), zero biases; independently for every member of the ensemble."""
    mlp = critic["params"]["VmapCritic_0"]["MLP_0"]
    dense = sorted((n for n in mlp if n.startswith("Dense_")), key=lambda n: int(n[6:]))
    new = dict(mlp)
    for i, (name, k) in enumerate(zip(dense, jax.random.split(key, len(dense)), strict=True)):
        kernel = mlp[name]["kernel"]  # (ensemble, in, out)
        init = jax.nn.initializers.orthogonal(1e-2 if i == len(dense) - 1 else math.sqrt(2))
        member = functools.partial(init, shape=kernel.shape[1:], dtype=kernel.dtype)
        new[name] = {"kernel": jax.vmap(member)(jax.random.split(k, kernel.shape[0])),
                     "bias": jnp.zeros_like(mlp[name]["bias"])}
    return {**critic, "params": {**critic["params"], "VmapCritic_0": {"MLP_0": new}}}


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> CQLState:
    config = config or Config()
    if config.cql_n_actions < 1 or config.cql_temp <= 0:
        raise ValueError("cql_n_actions must be >= 1 and cql_temp > 0")
    if config.cql_clip_diff_min > config.cql_clip_diff_max:
        raise ValueError("cql_clip_diff_min must not exceed cql_clip_diff_max")
    k_sac, k_ortho = jax.random.split(key)
    base = sac.init(k_sac, spec, config)
    if config.orthogonal_init:
        critic = orthogonal_critic(base.critic, k_ortho)
        _, critic_tx, _ = sac.optimizers(config)
        base = base.replace(critic=critic, target_critic=critic,
                            critic_opt=critic_tx.init(critic))
    log_alpha_prime = jnp.asarray(LOG_ALPHA_PRIME_INIT, jnp.float32)
    return CQLState(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                    log_alpha_prime=log_alpha_prime,
                    alpha_prime_opt=optax.adam(config.critic_lr).init(log_alpha_prime))


def alpha_prime(log_alpha_prime: jax.Array) -> jax.Array:
    return jnp.clip(jnp.exp(log_alpha_prime), 0.0, ALPHA_PRIME_MAX)


def max_backup_target(state: CQLState, batch: Transition, key: jax.Array) -> jax.Array:
    """cql_max_target_backup: the max over n actions a' ~ pi(.|s') of the (subset-)min target
    Q'(s', a'), minus alpha * log pi of the maximizing action with backup_entropy."""
    cfg, n = state.config, state.config.cql_n_actions
    actor_net, critic_net = sac.networks(cfg, state.spec)
    k_action, k_subset = jax.random.split(key)
    mean, log_std = actor_net.apply(state.actor, batch.next_obs)
    repeat = lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], n, x.shape[-1]))  # noqa: E731
    actions, log_probs = tanh_gaussian_sample(repeat(mean), repeat(log_std), k_action)
    next_q = critic_net.apply(state.target_critic, repeat(batch.next_obs), actions)  # (N, B, n)
    subset = jax.random.choice(k_subset, cfg.num_critics, (cfg.num_target_critics,),
                               replace=False)
    next_q = next_q[subset].min(axis=0)
    best = jnp.argmax(next_q, axis=-1)
    next_v = jnp.take_along_axis(next_q, best[:, None], -1)[:, 0]
    if cfg.backup_entropy:
        next_log_prob = jnp.take_along_axis(log_probs, best[:, None], -1)[:, 0]
        next_v = next_v - jnp.exp(state.log_alpha) * next_log_prob
    return batch.reward + cfg.discount * (1.0 - batch.terminal) * next_v


def conservative_gap(critic_params, state: CQLState, batch: Transition, q_data: jax.Array,
                     key: jax.Array) -> tuple[jax.Array, dict]:
    """Per critic (shape (N,)): E_s[clip(temp * logsumexp(Q(s, a_j) / temp) - Q(s, a_data))]
    over n uniform actions, n actions of pi(.|s) and n of pi(.|s'), all evaluated at s."""
    cfg = state.config
    ood, info = soft_max_q(critic_params, state, batch, q_data, key)
    diff = jnp.clip(ood - q_data, cfg.cql_clip_diff_min, cfg.cql_clip_diff_max).mean(axis=-1)
    return diff, info


def soft_max_q(critic_params, state: CQLState, batch: Transition, q_data: jax.Array,
               key: jax.Array) -> tuple[jax.Array, dict]:
    """Per critic and state (shape (N, B)): temp * logsumexp_j(Q(s, a_j) / temp), the soft
    maximum the conservative term pushes down (also H2O's, weighted per state)."""
    cfg, n = state.config, state.config.cql_n_actions
    actor_net, critic_net = sac.networks(cfg, state.spec)
    batch_size, action_size = batch.action.shape
    k_random, k_current, k_next = jax.random.split(key, 3)

    def repeat(x, times=n):
        return jnp.broadcast_to(x[:, None], (batch_size, times, x.shape[-1]))

    def policy_actions(obs, k):
        mean, log_std = actor_net.apply(state.actor, obs)
        actions, log_probs = tanh_gaussian_sample(repeat(mean), repeat(log_std), k)
        return jax.lax.stop_gradient(actions), jax.lax.stop_gradient(log_probs)

    random_actions = jax.random.uniform(k_random, (batch_size, n, action_size),
                                        minval=-1.0, maxval=1.0)
    current_actions, current_log_probs = policy_actions(batch.obs, k_current)
    next_actions, next_log_probs = policy_actions(batch.next_obs, k_next)
    actions = jnp.concatenate([random_actions, current_actions, next_actions], axis=1)
    q = critic_net.apply(critic_params, repeat(batch.obs, 3 * n), actions)  # (N, B, 3n)
    q_random, q_current, q_next = jnp.split(q, 3, axis=-1)
    info = {"q_random_mean": q_random.mean(), "q_policy_mean": q_current.mean(),
            "q_next_policy_mean": q_next.mean()}
    if cfg.calql:
        if "mc_returns" not in batch.extra:
            raise ValueError("calql needs batch.extra['mc_returns'] (see DATASET_FIELDS)")
        bound = batch.extra["mc_returns"][:, None]
        info["calql_bound_rate"] = jnp.mean(jnp.concatenate([q_current, q_next], -1) < bound)
        q_current, q_next = jnp.maximum(q_current, bound), jnp.maximum(q_next, bound)
    if cfg.cql_importance_sample:
        random_density = action_size * math.log(0.5)
        cat = jnp.concatenate([q_random - random_density, q_next - next_log_probs,
                               q_current - current_log_probs], axis=-1)
    else:
        cat = jnp.concatenate([q_random, q_data[..., None], q_next, q_current], axis=-1)
    return jax.nn.logsumexp(cat / cfg.cql_temp, axis=-1) * cfg.cql_temp, info  # (N, B)


def critic_loss(critic_params, state: CQLState, batch: Transition, key: jax.Array):
    """Sum over critics of the mean squared TD error plus the weighted conservative gap."""
    cfg = state.config
    _, critic_net = sac.networks(cfg, state.spec)
    k_target, k_cql = jax.random.split(key)
    target = (max_backup_target if cfg.cql_max_target_backup else sac.td_target)(
        state, batch, k_target)
    target = hubl.blend(target, batch, cfg)  # HUBL variants (offbench/hubl.py)
    q = critic_net.apply(critic_params, batch.obs, batch.action)
    td_loss = jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=-1).sum()
    diff, info = conservative_gap(critic_params, state, batch, q, k_cql)
    if cfg.lagrange:
        weight = jax.lax.stop_gradient(alpha_prime(state.log_alpha_prime)) * cfg.cql_alpha
        cql_loss = (weight * (diff - cfg.target_action_gap)).sum()
    else:
        cql_loss = cfg.cql_alpha * diff.sum()
    loss = td_loss + cql_loss
    return loss, {"critic_loss": loss, "td_loss": td_loss, "cql_loss": cql_loss,
                  "cql_diff": diff.mean(), "q_mean": q.mean(), "q_max": q.max(),
                  "target_mean": target.mean(), **info}


def alpha_prime_loss(log_alpha_prime: jax.Array, gap: jax.Array, config: Config) -> jax.Array:
    """-alpha' * cql_alpha * (gap - target_action_gap), gap averaged over critics (CORL's
    -(l1 + l2) / 2): gradient descent raises alpha' while the gap exceeds target_action_gap."""
    return -alpha_prime(log_alpha_prime) * config.cql_alpha * (gap - config.target_action_gap)


def data_log_prob(actor_params, state: CQLState, obs: jax.Array, action: jax.Array):
    """log pi(a|s) of dataset actions; |a| clipped to 1 - eps as torch's TanhTransform does."""
    actor_net, _ = sac.networks(state.config, state.spec)
    mean, log_std = actor_net.apply(actor_params, obs)
    eps = jnp.finfo(action.dtype).eps
    return tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(jnp.clip(action, -1 + eps, 1 - eps)))


def actor_loss(actor_params, state: CQLState, batch: Transition, key: jax.Array):
    """SAC's actor loss; during the first bc_steps updates alpha * log pi(a|s) - log pi(a_data|s)
    instead (the same sample a ~ pi(.|s))."""
    loss, info = sac.actor_loss(actor_params, state, batch, key)
    if state.config.bc_steps > 0:
        entropy_term = -jnp.exp(state.log_alpha) * info["entropy"]  # E[alpha * log pi(a|s)]
        bc = entropy_term - data_log_prob(actor_params, state, batch.obs, batch.action).mean()
        loss = jnp.where(state.steps < state.config.bc_steps, bc, loss)
        info = {**info, "actor_loss": loss}
    return loss, info


def update(state: CQLState, batch: Transition, key: jax.Array) -> tuple[CQLState, dict]:
    cfg = state.config
    actor_tx, critic_tx, alpha_tx = sac.optimizers(cfg)
    alpha_prime_tx = optax.adam(cfg.critic_lr)
    k_critic, k_actor = jax.random.split(key)

    # every gradient at the pre-update parameters
    critic_grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch,
                                                                    k_critic)
    actor_grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch,
                                                                 k_actor)
    entropy = jax.lax.stop_gradient(actor_info["entropy"])
    goal = sac.target_entropy(cfg, state.spec)
    alpha_grad = jax.grad(sac.temperature_loss)(state.log_alpha, entropy, goal)
    gap = jax.lax.stop_gradient(critic_info["cql_diff"])

    updates, critic_opt = critic_tx.update(critic_grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    target_critic = optax.incremental_update(critic, state.target_critic, cfg.tau)
    updates, actor_opt = actor_tx.update(actor_grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)
    updates, alpha_opt = alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, updates)
    log_alpha_prime, alpha_prime_opt = state.log_alpha_prime, state.alpha_prime_opt
    if cfg.lagrange:
        grad = jax.grad(alpha_prime_loss)(log_alpha_prime, gap, cfg)
        updates, alpha_prime_opt = alpha_prime_tx.update(grad, alpha_prime_opt, log_alpha_prime)
        log_alpha_prime = optax.apply_updates(log_alpha_prime, updates)

    new = state.replace(critic=critic, target_critic=target_critic, critic_opt=critic_opt,
                        actor=actor, actor_opt=actor_opt, log_alpha=log_alpha,
                        alpha_opt=alpha_opt, log_alpha_prime=log_alpha_prime,
                        alpha_prime_opt=alpha_prime_opt, steps=state.steps + 1)
    metrics = {**critic_info, **actor_info, "alpha": jnp.exp(log_alpha),
               "temperature_loss": sac.temperature_loss(log_alpha, entropy, goal),
               # the multiplier on cql_alpha: alpha' with lagrange, else 1
               "alpha_prime": alpha_prime(log_alpha_prime) if cfg.lagrange else jnp.ones(()),
               "alpha_prime_loss": (alpha_prime_loss(state.log_alpha_prime, gap, cfg)
                                    if cfg.lagrange else jnp.zeros(()))}
    return new, metrics


act = sac.act
policy_params = sac.policy_params
q_values = sac.q_values
