"""Normalized scores: 100 * (return - ref_min) / (ref_max - ref_min), D4RL's definition, with
the task's reference scores (uniform random and expert policy, 100 episodes each; measured by
`offbench policies select`, stored in tasks/policies/TASK/policies.json and in every dataset).
The one place the formula is written: loops, datasets, policies and reports call it."""

from __future__ import annotations

from typing import Any


def normalized_score(returns: Any, ref_min: float, ref_max: float) -> Any:
    """100 * (returns - ref_min) / (ref_max - ref_min), for floats, numpy or JAX arrays."""
    return 100.0 * (returns - ref_min) / (ref_max - ref_min)
