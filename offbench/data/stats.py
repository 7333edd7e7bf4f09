"""Dataset statistics: size, episodes, returns, and the two measures of "A Dataset Perspective on
Offline RL" (Schweighofer et al., 2022):

- TQ (trajectory quality): the average return of the dataset's trajectories, normalized between
  the random and the expert policy, (mean return - ref_min) / (ref_max - ref_min). Only whole
  episodes count (ended by termination or the task's time limit); an episode cut by the end of
  the data would bias it down.
- SACo (state-action coverage): unique state-action pairs of the dataset divided by those of a
  reference dataset (the paper uses the online agent's replay data; we use the task's
  `full-replay` dataset of the same size). The paper counts exact pairs in discrete envs; for
  continuous spaces we count occupied cells of a fixed grid: (s, a) standardized with the
  reference's mean and std, projected onto 8 fixed random directions (seed 0), binned at 0.5.
  This is our adaptation; SACo values are comparable within a task and size, not across.
"""

from __future__ import annotations

import numpy as np

from offbench.score import normalized_fraction, normalized_score

SACO_DIMS = 8
SACO_BIN = 0.5


def episode_returns(rewards: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.asarray(rewards, np.float64), np.r_[0, np.cumsum(lengths)[:-1]])


def whole_episodes(terminals: np.ndarray, lengths: np.ndarray, time_limit: int) -> np.ndarray:
    """Mask of episodes that ended by termination or at the time limit (not cut short)."""
    ends = np.cumsum(lengths) - 1
    return (np.asarray(terminals)[ends] > 0) | (lengths >= time_limit)


def _cells(obs: np.ndarray, actions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> int:
    x = (np.concatenate([obs, actions], axis=1) - mean) / std
    directions = np.random.default_rng(0).normal(size=(x.shape[1], SACO_DIMS))
    directions /= np.linalg.norm(directions, axis=0)
    cells = np.floor(x @ directions / SACO_BIN).astype(np.int64)
    return len(np.unique(cells, axis=0))


def saco(obs: np.ndarray, actions: np.ndarray, ref_obs: np.ndarray, ref_actions: np.ndarray
         ) -> float:
    ref = np.concatenate([ref_obs, ref_actions], axis=1)
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    return _cells(obs, actions, mean, std) / _cells(ref_obs, ref_actions, mean, std)


def summary(rewards: np.ndarray, terminals: np.ndarray, lengths: np.ndarray, ref_min: float,
            ref_max: float, time_limit: int) -> dict:
    returns = episode_returns(rewards, lengths)
    whole = whole_episodes(terminals, lengths, time_limit)
    scored = returns[whole] if whole.any() else returns
    mean = float(scored.mean())
    return {"transitions": int(np.sum(lengths)), "episodes": len(lengths),
            "whole_episodes": int(whole.sum()), "return_mean": mean,
            "return_min": float(scored.min()), "return_max": float(scored.max()),
            "normalized": normalized_score(mean, ref_min, ref_max),
            "tq": normalized_fraction(mean, ref_min, ref_max)}
