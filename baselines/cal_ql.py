"""Cal-QL (Nakamoto et al. 2023, "Cal-QL: Calibrated Offline RL Pre-Training for Efficient
Online Fine-Tuning"): CQL whose conservative term cannot push the Q-values of policy actions
below the Monte-Carlo return-to-go of the behaviour policy,

    cql_alpha * E_s[ temp * logsumexp_j(max(Q(s, a_j), G(s)) / temp) - Q(s, a_data) ]

(the bound applies to the policy's actions at s and s', not to the uniform ones). Everything
is `baselines/cql.py` with `calql=True`; this module only sets Cal-QL's published O2O
settings and declares the modes.

Defaults: CORL's algorithms/finetune/cal_ql.py (TrainConfig), which are CQL's D4RL settings
(cql.py's defaults: cql_alpha 10 offline and online, Adam 3e-5 actor / 3e-4 critic, batch 256,
10 sampled actions, importance sampling, no entropy backup, orthogonal critic init, states
standardized) plus the Cal-QL parts: the bound on, and a mixing ratio of 0.5 (half of every
online minibatch from the dataset; `offline_ratio`, read by the O2O loop), 1M offline updates
then 1M online env steps at one update per step. Where ours differs: CORL's critics have 2
hidden layers and its actor 3; ours share cql.py's 3x256 for both. Env transitions get their MC
returns when their episode ends, as in the authors' code (CORL stores 0 for them); until then
they carry no bound (-inf), since their return is not known yet.
"""

from __future__ import annotations

import dataclasses

from baselines import cql
from baselines.cql import act, init, policy_params, q_values, update

MODES = ("offline", "o2o")
DATASET_FIELDS = ("mc_returns",)
__all__ = ["Config", "MODES", "DATASET_FIELDS", "init", "update", "act", "policy_params",
           "q_values"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    calql: bool = True
    offline_ratio: float = 0.5  # Cal-QL's mixing_ratio (the O2O loop reads it)
