"""CQL with HUBL (offbench/hubl.py): cql.py's algorithm whose critic target is blended
with the dataset's Monte-Carlo return, y~ = (1 - hubl_lambda) * y + hubl_lambda * G, the
paper's relabeling r~ = r + gamma * lambda * h(s'), gamma~ = gamma * (1 - lambda) (Geng et al.,
ICLR 2024). Everything else, defaults included, is `baselines/cql.py`; `--set hubl_lambda=0`
gives cql itself, so a sweep of this module over hubl_lambda is HUBL on vs off.

hubl_lambda's default, 0.5, is ours: the paper sets lambda per trajectory from its return (see
offbench/hubl.py for what is and is not implemented). Offline only (online transitions have no
Monte-Carlo return until their episode ends).
"""

from __future__ import annotations

import dataclasses

import jax

from offbench import hubl
from offbench.algorithms import EnvSpec
from offbench_baselines import cql
from offbench_baselines.cql import act, policy_params, q_values, update

MODES = ("offline",)
DATASET_FIELDS = ("mc_returns",)  # G, computed by the harness from the rewards learned
__all__ = ["Config", "MODES", "DATASET_FIELDS", "init", "update", "act", "policy_params",
           "q_values"]


@dataclasses.dataclass(frozen=True)
class Config(cql.Config):
    hubl_lambda: float = 0.5  # weight of the Monte-Carlo return in the target, in [0, 1]


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None):
    config = config or Config()
    hubl.check(config)
    return cql.init(key, spec, config, dataset)
