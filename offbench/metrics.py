"""Summary metrics of O2O and hybrid learning curves (normalized scores, 100 = expert).

O2O (issue 6; CORL's regret adapted to dense rewards):

- `pretrain_score`: the score of the last evaluation of offline pre-training;
- `dip`: the lowest score of the online evaluations within the first 10% of the online budget
  (env steps <= 0.1 * budget; when no evaluation falls there, the first online one), i.e. how
  far the policy falls right after the switch; `dip_drop` = pretrain_score - dip;
- `final_score`: the score of the last online evaluation;
- `regret`: the mean over online evaluations of (1 - score / 100). Lower is better; a policy at
  expert level throughout has 0, one at random level 1.

Hybrid: `steps_to_threshold`, the env steps of the first evaluation whose score reaches the
threshold (None if none does).

Scores come from raw returns through `offbench.score.normalized_score` (the task's reference scores)
when a task is given, or are passed in already normalized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from offbench import policies
from offbench.score import normalized_score

DIP_FRACTION = 0.1


def _scores(values: Sequence[float], task: str | None) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if task is None:
        return values
    ref_min, ref_max = policies.reference_scores(task)
    return normalized_score(np.asarray(values, np.float64), ref_min, ref_max)


def o2o_summary(pretrain_scores: Sequence[float], online_steps: Sequence[float],
                online_scores: Sequence[float], online_budget: int,
                task: str | None = None) -> dict:
    """O2O metrics of one seed. `pretrain_scores`: the offline phase's evaluations in order;
    `online_steps`/`online_scores`: the online evaluations (env steps since the switch, score).
    With `task`, the scores are raw returns and are normalized with the task's references."""
    pre = _scores(pretrain_scores, task)
    steps = np.asarray(online_steps, np.float64)
    online = _scores(online_scores, task)
    if len(online) == 0 or len(steps) != len(online):
        raise ValueError("o2o_summary needs one score per online evaluation (at least one)")
    if online_budget <= 0:
        raise ValueError(f"online_budget must be positive, got {online_budget}")
    early = steps <= DIP_FRACTION * online_budget
    dip = float(online[early].min()) if early.any() else float(online[0])
    pretrain = float(pre[-1]) if len(pre) else math.nan
    return {"pretrain_score": pretrain, "dip": dip, "dip_drop": pretrain - dip,
            "final_score": float(online[-1]), "regret": float(np.mean(1.0 - online / 100.0))}


def steps_to_threshold(env_steps: Sequence[float], curve: Sequence[float], threshold: float,
                       task: str | None = None) -> int | None:
    """Env steps of the first evaluation whose score is >= threshold; None if none is."""
    values = _scores(curve, task)
    reached = np.flatnonzero(values >= threshold)
    return int(np.asarray(env_steps)[reached[0]]) if len(reached) else None
