"""TD3+BC with HUBL: `baselines/td3_bc.py` with its critic target blended with the dataset's
Monte-Carlo return, y~ = (1 - hubl_lambda) * y + hubl_lambda * G (Geng et al., ICLR 2024;
the equations, the default lambda of 0.5 and what is and is not implemented: offbench/hubl.py).
Defaults otherwise td3_bc's; `--set hubl_lambda=0` is td3_bc itself. Offline only."""

from __future__ import annotations

from offbench import hubl
from offbench_baselines import td3_bc
from offbench_baselines.td3_bc import act, policy_params, q_values, update

MODES, DATASET_FIELDS = hubl.MODES, hubl.DATASET_FIELDS
Config, init = hubl.variant(td3_bc, __name__)
__all__ = ["Config", "MODES", "DATASET_FIELDS", "init", "update", "act", "policy_params",
           "q_values"]
