"""WSRL (Zhou, Peng, Li, Levine & Kumar 2024, "Efficient Online Reinforcement Learning
Fine-Tuning Need Not Retain Offline Data"): pre-train offline, then warm up the online replay
buffer with rollouts of the FROZEN pre-trained policy, then fine-tune with SAC on env data only.

- Pre-training: Cal-QL (`baselines/cql.py` with `calql=True`, CORL's Cal-QL settings) on the
  same network the online phase uses: an ensemble of `num_critics` 10 LayerNorm critics, the
  target the min over a random `num_target_critics` 2 (WSRL pre-trains its ensemble so the
  weights carry over).
- Warm-up: `warmup_steps` 5000 env steps acted by the pre-trained policy (sampling from it),
  with no updates, so its parameters stay as pre-trained (the loop's `warmup_actions="policy"`,
  offbench/loops/online.py; declared here by the config fields the O2O loop reads).
- Online: `online_update` (the O2O loop's hook for a fine-tuning step that differs from the
  pre-training one) is RLPD's SAC step, `baselines/rlpd.py`: `utd` critic steps per env step,
  the actor and temperature once per `utd`; no conservative term; `offline_ratio` 0, so every
  online minibatch is env transitions only (the buffer never holds dataset transitions).

Where ours differs from WSRL's code: the config is one frozen dataclass for both phases, so the
online SAC step keeps CQL's learning rates (3e-5 actor / 3e-4 critic) and its backup without
the entropy term; the actor is updated once per `utd` critic steps (RLPD's schedule); the UTD
default 4 and the actor on the ensemble min are our reading of the paper's locomotion settings.
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
DATASET_FIELDS = ("mc_returns",)  # Cal-QL pre-training
__all__ = ["Config", "MODES", "SKIPS_METRICS", "DATASET_FIELDS", "init", "update",
           "online_update", "act", "policy_params"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    calql: bool = True
    num_critics: int = 10
    num_target_critics: int = 2
    critic_layer_norm: bool = True
    # read by the O2O loop
    offline_ratio: float = 0.0  # no offline data online
    warmup_steps: int = 5000  # env steps of frozen-policy rollouts before any online update
    warmup_actions: str = "policy"
    utd: int = 4  # online critic steps per env step


def online_update(state: CQLState, batch: Transition, key: jax.Array) -> tuple[CQLState, dict]:
    """The online phase's step: SAC on the ensemble (RLPD's critic/actor schedule), no CQL."""
    return rlpd.update(state, batch, key)
