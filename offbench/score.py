"""Normalized scores: 100 * (return - ref_min) / (ref_max - ref_min), D4RL's definition, with
the task's reference scores (uniform random and expert policy, 100 episodes each; measured by
`offbench policies select`, stored in tasks/policies/TASK/policies.json and in every dataset)."""

from __future__ import annotations

import numpy as np

from offbench import policies


def normalize(task: str, returns: np.ndarray | float) -> np.ndarray:
    ref_min, ref_max = policies.reference_scores(task)
    return 100.0 * (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)
