"""Robust IQL (Yang et al. 2023, "Towards Robust Offline RL under Diverse Data Corruption").

IQL (baselines/iql.py) made robust to corrupted data by three changes, each in one place here:

- V(s) by expectile regression onto the alpha-QUANTILE over an ensemble of N target critics
  (instead of the min of two): L_V = E[|tau - 1(u < 0)| u^2], u = q_alpha(Q_target_1..N(s, a))
  - V(s) (linear interpolation between order statistics, torch.quantile's rule);
- every critic regressed onto y = clip(r + gamma * (1 - done) * V(s'), -100, 1000) with the
  HUBER loss: L_Q = mean over critics and batch of huber(y - Q_i(s, a)), where
  huber(d) = d^2 / (2 delta) if |d| < delta else |d| - delta / 2, delta = 1 / sigma^2 (the
  authors' parametrization by `sigma`);
- observations standardized (the harness's normalize_obs), as the paper asks.

The actor is the authors' deterministic tanh policy trained by advantage-weighted regression:
L_pi = E[min(exp(beta * u), 100) * ||pi(s) - a||^2], with the advantage u of the V step.
One update is the authors' order (RIQL.py, train): V(s') is read before the V step, then the V
step, the Q step with that V(s'), and the actor step with the V step's advantage (all with the
V from before its step, as CORL's IQL); then the Polyak update of the target critics.

Defaults (the authors' RIQL.py and RIQL_config.py for D4RL locomotion): 2x256 ReLU networks,
Adam 3e-4 for all three, batch 256, gamma 0.99, Polyak 0.005, expectile 0.7, beta 3.0, the
actor's learning rate cosine-annealed over `max_steps`, rewards x 1000 / (max - min
whole-episode return) (the harness's normalize_reward_by_returns), N = 5 critics. The quantile
alpha, Huber sigma and N are set per task and corruption by the authors (RIQL_config.py);
our defaults are a middle setting (alpha 0.25, sigma 1.0, N 5), and their table is for `--set`:

    random corruption of   halfcheetah         walker2d            hopper
    observations           0.1 / 0.1           0.1 / 0.25          0.1 / 0.25, N 3
    actions                0.5 / 0.25, N 3     0.5 / 0.1           0.1 / 0.25
    rewards                3.0 / 0.25          3.0 / 0.1           1.0 / 0.25, N 3
    dynamics               3.0 / 0.25          1.0 / 0.25, N 3     1.0 / 0.5
    (huber_sigma / quantile; N 5 unless said)

    adversarial corruption of  halfcheetah     walker2d        hopper
    observations               0.1 / 0.1       1.0 / 0.25      1.0 / 0.25
    actions                    1.0 / 0.1       1.0 / 0.1       1.0 / 0.25
    rewards                    1.0 / 0.1       3.0 / 0.1       0.1 / 0.25
    dynamics                   1.0 / 0.1       1.0 / 0.25      1.0 / 0.5
    (huber_sigma / quantile; N 5; `+corrupt=FIELD:adversarial:RATE:EPS`)

Declared differences from the authors' code: observations are standardized with the mean and
std of the dataset's observations (theirs: of observations and next observations together);
initialization is Flax's default (theirs: the EDAC paper's, biases 0.1 and the last layer
U(-3e-3, 3e-3)); the critics are one vmapped ensemble (as theirs, VectorizedQ).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP, CriticEnsemble
from offbench_baselines.iql import (
    IQLState,
    awr_weights,
    expectile_loss,
    init_state,
    optimizers,
    value_fn,
)

MODES = ("offline",)


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    expectile: float = 0.7
    beta: float = 3.0  # inverse temperature of the advantage weights
    max_weight: float = 100.0
    num_critics: int = 5
    quantile: float = 0.25  # alpha of the V target's quantile over the ensemble
    huber_sigma: float = 1.0  # the authors' sigma: the Huber threshold is 1 / sigma^2
    target_min: float = -100.0  # the Q target is clipped to [target_min, target_max]
    target_max: float = 1000.0
    actor_lr_schedule: str = "cosine"  # "cosine" (to 0 over max_steps) or "constant"
    max_steps: int = 1_000_000
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)
    normalize_reward_by_returns: bool = True  # applied by the harness


RIQLState = IQLState  # the same networks, optimizers and counters


def actor_net(config: Config, spec: EnvSpec) -> MLP:
    return MLP(config.hidden, spec.action_size)


def policy(actor_params, config: Config, spec: EnvSpec, obs: jax.Array) -> jax.Array:
    """The deterministic policy tanh(MLP(s))."""
    return jnp.tanh(actor_net(config, spec).apply(actor_params, obs))


def critic_net(config: Config) -> CriticEnsemble:
    return CriticEnsemble(config.hidden, config.num_critics)


def huber(diff: jax.Array, sigma: float) -> jax.Array:
    """The authors' Huber loss: d^2 / (2 delta) below delta = 1 / sigma^2, |d| - delta / 2 above."""
    delta = 1.0 / sigma ** 2
    size = jnp.abs(diff)
    return jnp.where(size < delta, 0.5 * diff ** 2 / delta, size - 0.5 * delta)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> RIQLState:
    config = config or Config()
    if not 0.0 <= config.quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {config.quantile}")
    if config.num_critics < 1 or config.huber_sigma <= 0:
        raise ValueError("num_critics must be >= 1 and huber_sigma > 0")
    if config.actor_lr_schedule not in ("cosine", "constant"):
        raise ValueError("actor_lr_schedule must be 'cosine' or 'constant'")
    return init_state(key, spec, config, actor_net(config, spec), critic_net(config))


def quantile_target(state: RIQLState, batch: Transition) -> jax.Array:
    """alpha-quantile over the N target critics of Q(s, a) at the dataset's actions."""
    q = critic_net(state.config).apply(state.target_critic, batch.obs, batch.action)
    return jnp.quantile(q, state.config.quantile, axis=0)


def value_loss(value_params, state: RIQLState, batch: Transition):
    v = value_fn(value_params, state.config, batch.obs)
    diff = jax.lax.stop_gradient(quantile_target(state, batch)) - v
    loss = jnp.mean(expectile_loss(diff, state.config.expectile))
    return loss, {"value_loss": loss, "v_mean": v.mean(), "adv": diff}


def critic_loss(critic_params, state: RIQLState, batch: Transition, next_v: jax.Array):
    cfg = state.config
    target = batch.reward + cfg.discount * (1.0 - batch.terminal) * next_v
    target = jax.lax.stop_gradient(jnp.clip(target, cfg.target_min, cfg.target_max))
    q = critic_net(cfg).apply(critic_params, batch.obs, batch.action)
    loss = jnp.mean(huber(target - q, cfg.huber_sigma))
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean()}


def actor_loss(actor_params, state: RIQLState, batch: Transition, adv: jax.Array):
    cfg = state.config
    weights = awr_weights(adv, cfg.beta, cfg.max_weight)
    squared = jnp.sum((policy(actor_params, cfg, state.spec, batch.obs) - batch.action) ** 2, -1)
    loss = jnp.mean(weights * squared)
    return loss, {"actor_loss": loss, "bc_mse": squared.mean(), "weight_mean": weights.mean()}


def update(state: RIQLState, batch: Transition, key: jax.Array) -> tuple[RIQLState, dict]:
    cfg = state.config
    actor_tx, critic_tx, value_tx = optimizers(cfg)
    next_v = value_fn(state.value, cfg, batch.next_obs)  # V(s') before the V step

    grads, value_info = jax.grad(value_loss, has_aux=True)(state.value, state, batch)
    adv = jax.lax.stop_gradient(value_info.pop("adv"))  # the V step's advantage
    updates, value_opt = value_tx.update(grads, state.value_opt, state.value)
    value = optax.apply_updates(state.value, updates)

    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch, next_v)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    target_critic = optax.incremental_update(critic, state.target_critic, cfg.tau)

    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch, adv)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    state = state.replace(actor=actor, actor_opt=actor_opt, critic=critic, critic_opt=critic_opt,
                          target_critic=target_critic, value=value, value_opt=value_opt,
                          steps=state.steps + 1)
    return state, {**value_info, **critic_info, **actor_info}


def act(state: RIQLState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """The deterministic policy (the authors evaluate and act with it; no exploration noise)."""
    return policy(state.actor, state.config, state.spec, obs)


def policy_params(state: RIQLState) -> dict:
    return state.actor


def q_values(state: RIQLState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of the N critics (not the targets), shape (N, batch)."""
    return critic_net(state.config).apply(state.critic, obs, action)
