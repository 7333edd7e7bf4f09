"""WSRL (Zhou, Peng, Li, Levine & Kumar 2024, "Efficient Online Reinforcement Learning
Fine-Tuning Need Not Retain Offline Data"): pre-train offline, then warm up the online replay
buffer with rollouts of the FROZEN pre-trained policy, then fine-tune with SAC on env data only.

Defaults: the authors' locomotion settings (zhouzypaul/wsrl: experiments/configs/sac_config.py,
wsrl_config.py, ensemble_config.py and train_config.py's locomotion_cql/locomotion_wsrl;
scripts/locomotion/launch_{cql,wsrl}_finetune.sh with --use_redq):

- Pre-training: CQL, not Cal-QL, on locomotion ("MC returns are hard to estimate", the
  authors' README): `baselines/cql.py` with cql_alpha 5, the max-target backup over 10 sampled
  actions, importance sampling, no entropy in the backup, on the network the online phase uses:
  2x256, LayerNorm in the actor and in each of `num_critics` 10 critics, the target the min over
  a random `num_target_critics` 2 (REDQ); actor and temperature Adam 1e-4, critics 3e-4, target
  entropy 0; 250k updates in the authors' scripts (the loop's budget, `--offline-updates`).
  `--set calql=true` is their pre-training on AntMaze/Adroit/Kitchen (hence DATASET_FIELDS).
- Warm-up: `warmup_steps` 5000 env steps acted by the pre-trained policy (sampling from it),
  with no updates, so its parameters stay as pre-trained (the loop's `warmup_actions="policy"`,
  offbench/loops/online.py; declared here by the config fields the O2O loop reads).
- Online: `online_update` (the O2O loop's hook for a fine-tuning step that differs from the
  pre-training one) is RLPD's SAC step, `baselines/rlpd.py`: `utd` 4 critic steps per env
  step, the actor (on the min over the whole ensemble, as WSRL's SACAgent) and temperature once
  per `utd`; no conservative term; `offline_ratio` 0, so every online minibatch is env
  transitions only (the buffer never holds dataset transitions).

AntMaze: WSRL's AntMaze choice (train_config.py antmaze_cql / antmaze_wsrl,
scripts/antmaze/launch_*.sh) is Cal-QL pre-training (`calql=true`) with the Lagrange variant
(cql_autotune_alpha, target action gap 0.8), rewards 10 r - 5 (--reward_scale 10
--reward_bias -5), 4x256 critics and a 2x256 actor (online: LayerNorm in both, the max-target
backup). `MAZE_SETTINGS` (below) are these on top of cql.py's AntMaze settings, applied by the
navigation sweep specs (tasks/sweeps/nav-*.toml) on the fixed-goal PointMaze data; network sizes
are left to the spec (one `hidden` here for actor and critics).

Where ours differs from WSRL's code: one config for both phases, so one batch size: 256 for
every step (WSRL online: a 1024 batch split into 4 critic minibatches of 256, the actor and
temperature stepped on all 1024); WSRL's SAC step draws the critic minibatches of an env step
from one 1024 sample, ours draws each on its own; initialization: cql.py's (orthogonal critics
with output scale 1e-2, Flax actor), WSRL's networks are Flax-default with output scale 1e-2;
LayerNorm before the ReLU (offbench/networks.py).
"""

from __future__ import annotations

import dataclasses

import jax

from offbench.algorithms import Transition
from offbench_baselines import cql, rlpd
from offbench_baselines.cql import CQLState, act, init, policy_params, update

MODES = ("o2o",)
# its online step is RLPD's, whose actor metrics are NaN between the actor's steps
SKIPS_METRICS = rlpd.SKIPS_METRICS
DATASET_FIELDS = ("mc_returns",)  # for `--set calql=true` (Cal-QL pre-training)
# WSRL's AntMaze choice (module docstring): Cal-QL pre-training with cql.py's AntMaze settings
MAZE_SETTINGS = {**cql.MAZE_SETTINGS, "calql": True}
__all__ = ["Config", "MODES", "SKIPS_METRICS", "DATASET_FIELDS", "MAZE_SETTINGS", "init",
           "update", "online_update", "act", "policy_params"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4
    temperature_lr: float = 1e-4
    target_entropy: float | None = 0.0
    cql_alpha: float = 5.0
    cql_max_target_backup: bool = True
    num_critics: int = 10
    num_target_critics: int = 2
    critic_layer_norm: bool = True
    actor_layer_norm: bool = True
    # read by the O2O loop
    offline_ratio: float = 0.0  # no offline data online
    warmup_steps: int = 5000  # env steps of frozen-policy rollouts before any online update
    warmup_actions: str = "policy"
    utd: int = 4  # online critic steps per env step

def online_update(state: CQLState, batch: Transition, key: jax.Array) -> tuple[CQLState, dict]:
    """The online phase's step: SAC on the ensemble (RLPD's critic/actor schedule), no CQL."""
    return rlpd.update(state, batch, key)
