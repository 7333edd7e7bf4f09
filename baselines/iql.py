"""Implicit Q-Learning (Kostrikov, Nair & Levine 2021, "Offline RL with implicit Q-learning").

Three networks, never querying actions outside the dataset:

- V(s) by expectile regression onto min_i Q_target_i(s, a):  L_V = E[|tau - 1(u < 0)| u^2],
  u = min Q_target(s, a) - V(s);
- twin Q(s, a) onto r + gamma * (1 - done) * V(s'):  L_Q = sum_i E[(Q_i(s, a) - y)^2];
- the actor by advantage-weighted regression (AWR):
  L_pi = -E[min(exp(beta * (min Q_target(s, a) - V(s))), 100) * log pi(a|s)].

One `update` is the authors' (ikostrikov/implicit_q_learning, learner.py) order: the V step,
then the actor and the Q step both with the NEW V, then the Polyak target update. (CORL uses
the V from before its step for both; the difference is one step of V.)

Actor (`GaussianActor`, shared with AWAC): a Gaussian N(mu(s), diag(exp(log_std))^2) with a
tanh'ed mean and a learned state-independent log-std (initialized at 0, clipped to [-5, 2]);
the samples are NOT tanh-squashed, the log-likelihood is of the raw dataset action, and the
deterministic action is the mean. This is the authors' NormalTanhPolicy(state_dependent_std=
False, tanh_squash_distribution=False, log_std_min=-5) and CORL's GaussianPolicy (which clips
log-std at -20 instead). Sampled actions are clipped to [-1, 1], as both do.

Defaults are the paper's locomotion settings, from the authors' code (configs/mujoco_config.py,
train_offline.py): 2x256 ReLU nets, Adam 3e-4 for all three, batch 256, gamma 0.99, tau 0.005,
expectile 0.7, beta (inverse temperature) 3.0, no dropout, and the actor's learning rate
decayed by a cosine schedule to 0 over `max_steps` updates (optax.cosine_decay_schedule, as the
authors; CORL: CosineAnnealingLR). The schedule needs the run's total number of updates: set
`max_steps` to the run's `updates`. For fine-tuning the authors do not decay
(antmaze_finetune_config: opt_decay_schedule=None): use `actor_lr_schedule=constant` for o2o.

Reward scaling, the authors' setting: on for every locomotion dataset (train_offline.py
normalizes halfcheetah, hopper and walker2d alike; we extend it to ant, which neither reference
runs), applied by the harness
(offbench/loops/offline.py) as r * 1000 / (max return - min return). The range is over whole
episodes only (ended by a termination or the time limit), as CORL's return_reward_range; the
authors' split_into_trajectories also counts the trailing cut episode.

CORL's locomotion configs (configs/offline/iql) depart from the authors' on three hopper
datasets and turn reward scaling off elsewhere; we keep the authors' uniform setting (one
setting for every dataset, the paper's), and list CORL's for `--set`:

    dataset                  CORL: normalize_reward  tau (Polyak)  beta  expectile
    hopper-medium            true                    0.001         3.0   0.7
    hopper-medium-replay     true                    0.001         3.0   0.7
    hopper-medium-expert     false                   0.005         6.0   0.5
    every other locomotion   false                   0.005         3.0   0.7

AntMaze and the navigation tasks. The published AntMaze settings (the authors'
configs/antmaze_config.py, train_offline.py, configs/antmaze_finetune_config.py; CORL's
configs/{offline,finetune}/iql/antmaze/*.yaml; WSRL's antmaze_iql) and what `MAZE_SETTINGS`
(below; applied by tasks/sweeps/nav-*.toml on the fixed-goal PointMaze data) sets here:

    setting       AntMaze (published)                     here, MAZE_SETTINGS
    expectile     0.9                                     0.9
    beta          10                                      1.0 (the same weights, see below)
    rewards       r - 1 (train_offline.py: rewards -= 1)  r * 1000 / return range = r * 1000
                                                          (normalize_reward_by_returns, default)
    actor lr      cosine decay offline, constant online   the same (O2O_SETTINGS)
    the rest      the locomotion settings above           the same

Why beta 1 and not r - 1: Config has no reward_bias field (adding one would change the id of
every IQL cell in the results store). On data whose episodes end with a termination at the
first reward (AntMaze with its goal termination; our `fixed` kind), r - 1 gives exactly
Q' = (Q - 1) / (1 - gamma) for the 0/1 reward's Q (and V alike), i.e. r - 1 is the 0/1 reward
scaled by 1 / (1 - gamma) = 100 and shifted by a constant, which the TD and expectile losses
do not see. The harness's return normalization scales the 0/1 reward by 1000 (the data's whole
episodes return 0 or 1), 10x the advantages of r - 1, so beta 1 here gives the advantage
weights exp(beta A) of the paper's beta 10 on r - 1; the values are 10x theirs plus a constant.

Other differences from the authors' code: observations are standardized by the harness
(CORL's normalize=True; the authors' code does not); initialization is Flax's default (the
authors use orthogonal); the critic loss is the SUM of the twin critics' mean squared errors,
as the authors' ((q1 - y)^2 + (q2 - y)^2).mean() (CORL averages the two: the same after Adam
but for gradients near Adam's epsilon).

The advantage-weighted actor loss, the Gaussian actor, the twin-Q TD loss and `act` are shared
with `baselines/awac.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench import hubl
from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP, CriticEnsemble

MODES = ("offline", "o2o")
# Settings `offbench run --mode o2o` applies unless --set: the authors' fine-tuning config keeps
# the actor's learning rate constant (a cosine decay over pre-training would stop the actor).
# Their fine-tuning appends env transitions to a buffer holding the dataset, so the dataset's
# share of a minibatch shrinks as the buffer grows; our loop keeps a fixed --offline-ratio.
O2O_SETTINGS = {"actor_lr_schedule": "constant"}
# The published AntMaze settings as they apply to our sparse-reward navigation data (module
# docstring): set per dataset by the navigation sweep specs (tasks/sweeps/nav-*.toml), not
# defaults, so locomotion cells keep their ids.
MAZE_SETTINGS = {"expectile": 0.9, "beta": 1.0}


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    expectile: float = 0.7  # the expectile of V (the paper's tau); 0.9 on AntMaze
    beta: float = 3.0  # inverse temperature of the advantage weights; 10 on AntMaze
    max_weight: float = 100.0  # exp-advantage weights are clipped here
    actor_lr_schedule: str = "cosine"  # "cosine" (decay to 0 over max_steps) or "constant"
    max_steps: int = 1_000_000  # updates the cosine schedule spans; set to the run's updates
    tanh_mean: bool = True  # actor mean = tanh(MLP(s))
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)
    normalize_reward_by_returns: bool = True  # applied by the harness: r * 1000 / return range


class IQLState(struct.PyTreeNode):  # RIQL's too
    actor: dict
    critic: dict
    target_critic: dict
    value: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    value_opt: optax.OptState
    steps: jax.Array
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


# --- shared with AWAC -------------------------------------------------------------------------

class GaussianActor(nn.Module):
    """Mean and log-std of N(mu(s), diag(exp(log_std))^2); log-std is a learned vector
    (initialized at 0) independent of the state, clipped to [log_std_min, log_std_max]."""

    hidden: Sequence[int]
    action_size: int
    tanh_mean: bool = True
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = MLP(self.hidden, self.action_size)(obs)
        if self.tanh_mean:
            mean = jnp.tanh(mean)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(log_std, mean.shape)


def actor_net(config, spec: EnvSpec) -> GaussianActor:
    """The actor of a config with `hidden`, `tanh_mean`, `log_std_min`, `log_std_max`."""
    return GaussianActor(config.hidden, spec.action_size, config.tanh_mean, config.log_std_min,
                         config.log_std_max)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """log N(action; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> jax.Array:
    """A sample of the Gaussian, clipped to the action box [-1, 1]."""
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)


def awr_weights(adv: jax.Array, inverse_temperature: float, max_weight: float) -> jax.Array:
    """min(exp(adv * inverse_temperature), max_weight), a constant for the actor's gradient."""
    weights = jnp.minimum(jnp.exp(adv * inverse_temperature), max_weight)
    return jax.lax.stop_gradient(weights)


def awr_loss(actor_params, config, spec: EnvSpec, obs: jax.Array, action: jax.Array,
             adv: jax.Array, inverse_temperature: float) -> tuple[jax.Array, dict]:
    """Advantage-weighted regression: -mean(weights * log pi(a|s)) over dataset (s, a)."""
    weights = awr_weights(adv, inverse_temperature, config.max_weight)
    mean, log_std = actor_net(config, spec).apply(actor_params, obs)
    log_prob = gaussian_log_prob(mean, log_std, action)
    loss = -jnp.mean(weights * log_prob)
    return loss, {"actor_loss": loss, "adv_mean": adv.mean(), "adv_max": adv.max(),
                  "weight_mean": weights.mean(), "log_prob": log_prob.mean(),
                  "log_std": log_std.mean()}


def twin_td_loss(q: jax.Array, target: jax.Array) -> jax.Array:
    """sum over critics of the mean squared error to the (constant) target: q is (n, batch)."""
    return jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=-1).sum()


def critic_net(config) -> CriticEnsemble:
    return CriticEnsemble(config.hidden, 2)


def act(state, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    mean, log_std = actor_net(state.config, state.spec).apply(state.actor, obs)
    if deterministic:
        return jnp.clip(mean, -1.0, 1.0)
    return gaussian_sample(mean, log_std, key)


def policy_params(state) -> dict:
    """The actor's parameters: all `act` needs besides the config."""
    return state.actor


def q_values(state, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of both critics (not the targets), shape (2, batch); AWAC's too."""
    return critic_net(state.config).apply(state.critic, obs, action)


# --- IQL --------------------------------------------------------------------------------------

def value_net(config: Config) -> MLP:
    return MLP(config.hidden, 1)


def value_fn(value_params, config: Config, obs: jax.Array) -> jax.Array:
    return value_net(config).apply(value_params, obs)[..., 0]


def optimizers(config) -> tuple[optax.GradientTransformation, ...]:
    actor_lr = config.actor_lr
    if config.actor_lr_schedule == "cosine":
        actor_lr = optax.cosine_decay_schedule(config.actor_lr, config.max_steps)
    return optax.adam(actor_lr), optax.adam(config.critic_lr), optax.adam(config.value_lr)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> IQLState:
    config = config or Config()
    if not 0.0 < config.expectile < 1.0:
        raise ValueError(f"expectile must be in (0, 1), got {config.expectile}")
    if config.actor_lr_schedule not in ("cosine", "constant"):
        raise ValueError("actor_lr_schedule must be 'cosine' or 'constant', "
                         f"got '{config.actor_lr_schedule}'")
    if config.max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {config.max_steps}")
    return init_state(key, spec, config, actor_net(config, spec), critic_net(config))


def init_state(key: jax.Array, spec: EnvSpec, config, actor: nn.Module,
               critic: nn.Module) -> IQLState:
    """Actor, critics (and their target copy) and V with their optimizers (shared with RIQL)."""
    k_actor, k_critic, k_value = jax.random.split(key, 3)
    obs = jnp.zeros((1, spec.observation_size))
    action = jnp.zeros((1, spec.action_size))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, action)
    value = value_net(config).init(k_value, obs)
    actor_tx, critic_tx, value_tx = optimizers(config)
    return IQLState(actor=actor_params, critic=critic_params, target_critic=critic_params,
                    value=value, actor_opt=actor_tx.init(actor_params),
                    critic_opt=critic_tx.init(critic_params), value_opt=value_tx.init(value),
                    steps=jnp.zeros((), jnp.int32), config=config, spec=spec)


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|expectile - 1(diff < 0)| * diff^2, elementwise (diff = target - prediction)."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff ** 2


def dataset_q(state: IQLState, batch: Transition) -> jax.Array:
    """min over the twin TARGET critics of Q(s, a) at the dataset's actions."""
    q = critic_net(state.config).apply(state.target_critic, batch.obs, batch.action)
    return q.min(axis=0)


def value_loss(value_params, state: IQLState, batch: Transition):
    """Expectile regression of V(s) onto min Q_target(s, a)."""
    v = value_fn(value_params, state.config, batch.obs)
    diff = jax.lax.stop_gradient(dataset_q(state, batch)) - v
    loss = jnp.mean(expectile_loss(diff, state.config.expectile))
    return loss, {"value_loss": loss, "v_mean": v.mean()}


def critic_loss(critic_params, state: IQLState, batch: Transition):
    """Both critics regressed onto r + gamma * (1 - done) * V(s') (V from `state.value`)."""
    cfg = state.config
    next_v = value_fn(state.value, cfg, batch.next_obs)
    target = batch.reward + cfg.discount * (1.0 - batch.terminal) * next_v
    target = hubl.blend(target, batch, cfg)  # HUBL variants (offbench/hubl.py)
    q = critic_net(cfg).apply(critic_params, batch.obs, batch.action)
    loss = twin_td_loss(q, target)
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean()}


def actor_loss(actor_params, state: IQLState, batch: Transition):
    """AWR with advantage min Q_target(s, a) - V(s) and weights exp(beta * adv) clipped."""
    adv = dataset_q(state, batch) - value_fn(state.value, state.config, batch.obs)
    return awr_loss(actor_params, state.config, state.spec, batch.obs, batch.action, adv,
                    state.config.beta)


def update(state: IQLState, batch: Transition, key: jax.Array) -> tuple[IQLState, dict]:
    cfg = state.config
    actor_tx, critic_tx, value_tx = optimizers(cfg)

    grads, value_info = jax.grad(value_loss, has_aux=True)(state.value, state, batch)
    updates, value_opt = value_tx.update(grads, state.value_opt, state.value)
    state = state.replace(value=optax.apply_updates(state.value, updates), value_opt=value_opt)

    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    target_critic = optax.incremental_update(critic, state.target_critic, cfg.tau)

    state = state.replace(actor=actor, actor_opt=actor_opt, critic=critic, critic_opt=critic_opt,
                          target_critic=target_critic, steps=state.steps + 1)
    return state, {**value_info, **critic_info, **actor_info}
