"""Normalized scores: 100 * (return - ref_min) / (ref_max - ref_min), D4RL's definition, with
the task's reference scores (uniform random and expert policy, 100 episodes each; measured by
`offbench policies select`, stored in tasks/policies/TASK/policies.json and in every dataset).
The one place the formula is written (also as a fraction, a dataset's TQ): loops, datasets,
policies and reports call it."""

from __future__ import annotations

from typing import Any


def normalized_score(returns: Any, ref_min: float, ref_max: float) -> Any:
    """100 * (returns - ref_min) / (ref_max - ref_min), for floats, numpy or JAX arrays."""
    return 100.0 * (returns - ref_min) / (ref_max - ref_min)


def normalized_fraction(returns: Any, ref_min: float, ref_max: float) -> Any:
    """The normalized score as a fraction, (returns - ref_min) / (ref_max - ref_min): random 0,
    expert 1 (a dataset's TQ, data/stats.py). Written apart from normalized_score, not as its
    hundredth, so the values keep their last bit."""
    return (returns - ref_min) / (ref_max - ref_min)
