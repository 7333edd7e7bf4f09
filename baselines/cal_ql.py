"""Cal-QL (Nakamoto et al. 2023, "Cal-QL: Calibrated Offline RL Pre-Training for Efficient
Online Fine-Tuning"): CQL whose conservative term cannot push the Q-values of policy actions
below the Monte-Carlo return-to-go of the behaviour policy,

    cql_alpha * E_s[ temp * logsumexp_j(max(Q(s, a_j), G(s)) / temp) - Q(s, a_data) ]

(the bound applies to the policy's actions at s and s', not to the uniform ones). Everything
is `baselines/cql.py` with `calql=True`; this module sets Cal-QL's published O2O settings, its
actor initialization and its online bound, and declares the modes.

Defaults: CORL's algorithms/finetune/cal_ql.py (TrainConfig), which are CQL's D4RL settings
(cql.py's defaults: cql_alpha 10 offline and online, Adam 3e-5 actor / 3e-4 critic, batch 256,
10 sampled actions, importance sampling, no entropy backup, orthogonal critic init, states
standardized) plus the Cal-QL parts: the bound on, and a mixing ratio of 0.5 (half of every
online minibatch from the dataset; `offline_ratio`, read by the O2O loop), 1M offline updates
then 1M online env steps at one update per step.

Two choices follow the authors' code (nakamotoo/Cal-QL, JaxCQL) where CORL's port departs from
it:
- Initialization: actor and critics orthogonal, gain sqrt(2) on the hidden layers and 1e-2 on
  the output layer, zero biases (the authors' `orthogonal_init=True`; critics from cql.py, the
  actor here). CORL applies gain sqrt(2) to every layer, output layers included.
- The bound during online fine-tuning: kept on (`calql_online=True`), as the authors' code does
  (its `enable_calql` holds for the whole run). CORL's loop toggles the bound off when
  fine-tuning starts (`switch_calibration`); `--set calql_online=false` does that here
  (`online_update`, the O2O loop's hook, runs CQL's update without the bound).

AntMaze: Cal-QL's published AntMaze settings (the authors' scripts/run_antmaze.sh:
cql_min_q_weight 5, Lagrange with cql_target_action_gap 0.8, a 2x256 actor and 4x256 critics,
reward_scale 10 and reward_bias -5, mixing ratio 0.5; CORL's configs/finetune/cal_ql/antmaze:
the same plus the max-target backup, cql_clip_diff_min -200, actor Adam 1e-4, no state
normalization) are `MAZE_SETTINGS`, cql.py's AntMaze settings (Cal-QL's mixing ratio is this
module's default), applied by the navigation sweep specs (tasks/sweeps/nav-*.toml) on the
fixed-goal PointMaze data; network sizes are left to the spec (one `hidden` for actor and
critics here). Not reproduced: the authors' `is_sparse_reward` option (an episode that never
succeeds gets the MC return r_min / (1 - gamma) everywhere); our MC returns are the discounted
sums over the episode as recorded.

Other differences from CORL: its critics have 2 hidden layers and its actor 3; ours share
cql.py's 3x256 for both. Env transitions get their MC returns when their episode ends, as in the
authors' code (CORL stores 0 for them); until then they carry no bound (-inf), since their
return is not known yet. The rest are cql.py's (log-std parametrization, temperature loss).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from offbench.algorithms import EnvSpec, Transition
from offbench_baselines import cql, sac
from offbench_baselines.cql import act, policy_params, q_values, update

MODES = ("offline", "o2o")
DATASET_FIELDS = ("mc_returns",)
HIDDEN_GAIN, OUTPUT_GAIN = math.sqrt(2.0), 1e-2  # the authors' orthogonal initialization
MAZE_SETTINGS = cql.MAZE_SETTINGS  # the published AntMaze settings (module docstring)
__all__ = ["Config", "MODES", "DATASET_FIELDS", "MAZE_SETTINGS", "init", "update",
           "online_update", "act", "policy_params", "q_values"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    calql: bool = True
    offline_ratio: float = 0.5  # Cal-QL's mixing_ratio (the O2O loop reads it)
    calql_online: bool = True  # keep the bound while fine-tuning (authors' code; CORL: off)


def orthogonal_actor(actor: dict, key: jax.Array) -> dict:
    """The actor's parameters re-drawn as the authors' code initializes them: orthogonal kernels
    with gain sqrt(2) (hidden layers) and 1e-2 (output layer), zero biases."""
    mlp = actor["params"]["MLP_0"]
    dense = sorted((n for n in mlp if n.startswith("Dense_")), key=lambda n: int(n[6:]))
    new = dict(mlp)
    for i, (name, k) in enumerate(zip(dense, jax.random.split(key, len(dense)), strict=True)):
        gain = OUTPUT_GAIN if i == len(dense) - 1 else HIDDEN_GAIN
        kernel = mlp[name]["kernel"]
        new[name] = {"kernel": jax.nn.initializers.orthogonal(gain)(k, kernel.shape,
                                                                   kernel.dtype),
                     "bias": jnp.zeros_like(mlp[name]["bias"])}
    return {**actor, "params": {**actor["params"], "MLP_0": new}}


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None,
         dataset=None) -> cql.CQLState:
    """cql.init (orthogonal critics with `orthogonal_init`), and the actor orthogonal too."""
    config = config or Config()
    k_cql, k_actor = jax.random.split(key)
    state = cql.init(k_cql, spec, config, dataset)
    if not config.orthogonal_init:
        return state
    actor = orthogonal_actor(state.actor, k_actor)
    actor_tx, _, _ = sac.optimizers(config)
    return state.replace(actor=actor, actor_opt=actor_tx.init(actor))


def online_update(state: cql.CQLState, batch: Transition, key: jax.Array
                  ) -> tuple[cql.CQLState, dict]:
    """The O2O loop's update while fine-tuning: cql.update, without the Monte-Carlo bound
    unless `calql_online`."""
    if state.config.calql_online:
        return update(state, batch, key)
    unbounded = state.replace(config=dataclasses.replace(state.config, calql=False))
    new, metrics = update(unbounded, batch, key)
    return new.replace(config=state.config), metrics
