"""ReBRAC (Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline Reinforcement
Learning"): TD3+BC with decoupled behaviour-cloning penalties in the actor AND in the critic
target, LayerNorm in the critic, deeper nets, larger batches and larger learning rates.

    critic  sum_i mean_batch (Q_i(s, a) - y)^2
            y = r + gamma * (1 - terminal) * (min_i Q'_i(s', a') - beta_2 * ||a' - a'_data||^2),
            a' = TD3's smoothed target action (as in baselines/td3_bc.py), a'_data the action the
            dataset takes at s' (`batch.extra["next_actions"]`, asked for by DATASET_FIELDS)
    actor   mean_batch (beta_1 * ||pi(s) - a||^2 - lambda * min_i Q_i(s, pi(s))),
            lambda = 1 / mean_batch |min_i Q_i(s, pi(s))| (a constant) if normalize_q, else 1

(||.||^2: sum over action dimensions.) Everything else -- state, networks, target policy
smoothing, delayed actor and target updates, `act` -- is TD3+BC's, imported from td3_bc.py.

Defaults are the D4RL locomotion settings of the authors' code (github.com/tinkoff-ai/ReBRAC,
configs/rebrac/) and of CORL (algorithms/offline/rebrac.py and configs/offline/rebrac/*.yaml):
Adam 1e-3 for actor and critic, 3x256 ReLU nets, LayerNorm in the critic only (actor_ln: false
in every locomotion config), batch 1024, gamma 0.99, tau 5e-3, policy noise 0.2, noise clip 0.5,
policy frequency 2, normalize_q true, and NO observation normalization (normalize_states: false;
so normalize_obs=False here). `expl_noise` 0.03 is rebrac_finetune.py's (CORL's
algorithms/finetune/rebrac.py uses 0.0), used only by `act(deterministic=False)` (o2o; the o2o
loop must then supply next_actions for online transitions too, as ReBRAC's fine-tuning does with
the policy's noisy action at s').

Fine-tuning (`online_update`, the O2O loop's hook), as CORL's algorithms/finetune/rebrac.py does
it: the critic's penalty is dropped (beta_2 = 0 online) and the actor's decays linearly over the
online updates, beta_1 * max(MIN_DECAY_COEF, 1 - t / online_updates) with MIN_DECAY_COEF 0.5
(CORL's min_decay_coef) and t counting online updates (the loop passes where fine-tuning starts
and how many updates it has); half of each minibatch stays the dataset's (the loop's default
offline ratio, CORL's mixing_ratio 0.5). CORL's fine-tuning runs also use Adam 3e-4 and batch
256 in both phases (its antmaze configs: critic 5e-5); ours keep the offline settings above
unless set.

actor_bc_coef (beta_1) and critic_bc_coef (beta_2) are tuned PER DATASET and must be set with
`--set actor_bc_coef=... --set critic_bc_coef=...`. The defaults (0.01, 0.01) are hopper-medium's.
CORL's configs/offline/rebrac/*.yaml (beta_1 / beta_2):

                 random       medium      expert      medium-expert  medium-replay  full-replay
    halfcheetah  0.001/0.1    0.001/0.01  0.01/0.01   0.01/0.1       0.01/0.001     0.001/0.1
    hopper       0.001/0.01   0.01/0.01   0.1/0.1     0.1/0.01       0.05/0.5       0.01/0.01
    walker2d     0.01/0.0     0.05/0.1    0.01/0.5    0.01/0.01      0.05/0.01      0.01/0.01

(the authors' own configs/rebrac/hopper/hopper_medium.yaml has critic_bc_coef 0.001.)

AntMaze and the navigation tasks. The published AntMaze settings (CORL's
configs/offline/rebrac/antmaze/*.yaml, the authors' configs/rebrac/antmaze): 3x256 nets,
LayerNorm in the critic only, batch 256, Adam 3e-4 actor / 5e-5 critic, gamma 0.999, tau 5e-3,
normalize_q, no state normalization, rewards x 100 (the JAX code's normalize_reward for
AntMaze, "like in LAPO"); beta_1 / beta_2 per dataset:

             umaze        umaze-diverse  medium-play   medium-diverse  large-play   large-diverse
    AntMaze  0.003/0.002  0.003/0.001    0.001/0.0005  0.001/0.0       0.002/0.001  0.002/0.002

`MAZE_SETTINGS` (below; applied per dataset by tasks/sweeps/nav-*.toml) maps the fixed-goal
PointMaze data onto the diverse datasets (random goals, like ours): umaze, medium, large ->
umaze-diverse, medium-diverse, large-diverse. Config has no reward scale (a new field would
change every ReBRAC cell's id), so the rewards stay 0/1 here and beta_2, which is in reward
units, is divided by 100: scaling the rewards by c and beta_2 by c scales every Q by c, which
normalize_q removes from the actor's loss, so this is the published setting up to Adam's
dynamics. Networks (3x256) are left to the spec (the navigation checks use smaller ones).

Differences from the reference code: LayerNorm comes before the ReLU (offbench/networks.py's MLP;
the reference applies it after); Flax's default initialization instead of the reference's
PyTorch-style uniform init with 0.1 biases and a +-1e-3 (actor) / +-3e-3 (critic) last layer;
the target actor is Polyak-averaged towards the actor after its step (as in TD3; the reference
uses the actor's parameters from before the step); `next_actions` repeats an episode's last action
at its end (the reference drops time-limit transitions instead). With beta_1 = 1 / (alpha *
action_size), normalize_q and identical critics (so that min_i Q_i = Q_1), ReBRAC's actor loss is
TD3+BC's divided by alpha.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from offbench.algorithms import EnvSpec, Transition
from offbench_baselines import td3_bc
from offbench_baselines.td3_bc import TD3State

MODES = ("offline", "o2o")
DATASET_FIELDS = ("next_actions",)
# the actor penalty's floor online, as a fraction of beta_1 (CORL's min_decay_coef; a constant,
# not a Config field: Config is what the results store keys cells by, and this value is not tuned)
MIN_DECAY_COEF = 0.5
# The published AntMaze settings for the fixed-goal navigation data, per maze (module
# docstring): set per dataset by the navigation sweep specs, not defaults (cell ids unchanged).
_MAZE_COMMON = {"batch_size": 256, "actor_lr": 3e-4, "critic_lr": 5e-5, "discount": 0.999}
MAZE_SETTINGS = {
    "pointmaze-umaze-fixed": {**_MAZE_COMMON, "actor_bc_coef": 0.003, "critic_bc_coef": 1e-5},
    "pointmaze-medium-fixed": {**_MAZE_COMMON, "actor_bc_coef": 0.001, "critic_bc_coef": 0.0},
    "pointmaze-large-fixed": {**_MAZE_COMMON, "actor_bc_coef": 0.002, "critic_bc_coef": 2e-5},
}


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256, 256)
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    batch_size: int = 1024
    discount: float = 0.99
    tau: float = 5e-3
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5
    policy_freq: int = 2  # actor and target updates on every policy_freq-th update
    actor_bc_coef: float = 0.01  # beta_1: per dataset, see the table above
    critic_bc_coef: float = 0.01  # beta_2: per dataset, see the table above
    normalize_q: bool = True  # lambda = 1 / mean |Q| in the actor loss
    expl_noise: float = 0.03  # std of act()'s Gaussian exploration noise (not deterministic)
    normalize_obs: bool = False  # applied by the harness (offbench/loops/offline.py)
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> TD3State:
    return td3_bc.init_state(key, spec, config or Config())


def critic_loss(critic_params, state: TD3State, batch: Transition, key: jax.Array,
                critic_bc_coef: float | jax.Array | None = None):
    """TD3's loss with beta_2 * ||a' - a'_data||^2 subtracted from the next state's value
    (beta_2: critic_bc_coef, the config's unless given)."""
    if "next_actions" not in batch.extra:
        raise ValueError("ReBRAC's critic needs batch.extra['next_actions'] (the dataset's action "
                         "at s'); loops provide the fields listed in DATASET_FIELDS")
    beta_2 = state.config.critic_bc_coef if critic_bc_coef is None else critic_bc_coef
    next_action, next_v = td3_bc.next_value(state, batch.next_obs, key)
    penalty = jnp.sum((next_action - batch.extra["next_actions"]) ** 2, axis=-1)
    next_v = next_v - beta_2 * penalty
    loss, info = td3_bc.td_loss(critic_params, state, batch, next_v)
    return loss, {**info, "critic_bc_penalty": penalty.mean()}


def actor_loss(actor_params, state: TD3State, batch: Transition,
               actor_bc_coef: float | jax.Array | None = None):
    """mean(beta_1 ||pi(s) - a||^2 - lambda min_i Q_i(s, pi(s))) (beta_1: actor_bc_coef, the
    config's unless given)."""
    cfg = state.config
    beta_1 = cfg.actor_bc_coef if actor_bc_coef is None else actor_bc_coef
    action = td3_bc.policy(actor_params, state, batch.obs)
    q = td3_bc.critics(state.critic, state, batch.obs, action).min(axis=0)
    lmbda = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean()) if cfg.normalize_q else 1.0
    penalty = jnp.sum((action - batch.action) ** 2, axis=-1)
    loss = jnp.mean(beta_1 * penalty - lmbda * q)
    return loss, {"actor_loss": loss, "actor_bc_penalty": penalty.mean(),
                  "lambda": jnp.asarray(lmbda, jnp.float32), "q_policy": q.mean()}


def update(state: TD3State, batch: Transition, key: jax.Array) -> tuple[TD3State, dict]:
    return td3_bc.td3_update(state, batch, key, critic_loss, actor_loss)


def online_bc_coefs(config: Config, online_update_index: jax.Array, online_updates: int
                    ) -> tuple[jax.Array, jax.Array]:
    """(beta_1, beta_2) at fine-tuning's update `online_update_index` (0 first): the actor's
    penalty decayed linearly to MIN_DECAY_COEF of itself over `online_updates`, the critic's
    dropped."""
    t = jnp.asarray(online_update_index, jnp.float32)
    decay = jnp.maximum(MIN_DECAY_COEF, 1.0 - t / max(1, online_updates))
    return config.actor_bc_coef * decay, jnp.zeros((), jnp.float32)


def online_update(state: TD3State, batch: Transition, key: jax.Array, *, online_start: int = 0,
                  online_updates: int = 1_000_000) -> tuple[TD3State, dict]:
    """Fine-tuning: TD3 with online_bc_coefs' penalties. The O2O loop passes online_start (the
    update count where fine-tuning began: the offline updates) and online_updates (its budget;
    CORL's default 1M)."""
    beta_1, beta_2 = online_bc_coefs(state.config, state.steps - online_start, online_updates)
    state, info = td3_bc.td3_update(
        state, batch, key, lambda *a: critic_loss(*a, critic_bc_coef=beta_2),
        lambda *a: actor_loss(*a, actor_bc_coef=beta_1))
    return state, {**info, "actor_bc_coef": beta_1}


act = td3_bc.act
policy_params = td3_bc.policy_params
q_values = td3_bc.q_values
