"""Trajectory-weighted minibatch sampling for the offline loop (Hong, Agrawal, Tachet des Combes
and Laroche, "Harnessing Mixed Offline Reinforcement Learning Datasets via Trajectory
Weighting", ICLR 2023): a sampler option of the loop (`OfflineConfig.sampler`), so any offline
algorithm can learn from a dataset re-weighted towards its high-return trajectories.

For trajectory i with return G_i (undiscounted sum of the dataset's rewards) and length T_i,
every transition of trajectory i is drawn with probability

    p_i = exp(x_i / alpha) / sum_j T_j exp(x_j / alpha)

(a softmax over all transitions of the per-trajectory score x), with temperature alpha and

- return-weighted (RW, `sampler = "return"`): x_i = (G_i - min_j G_j) / (max_j G_j - min_j G_j);
- advantage-weighted (AW, `sampler = "advantage"`): A_i = G_i - V(s0_i), where V is a linear
  regression with intercept of the returns on the trajectories' initial observations (ordinary
  least squares over the trajectories), and x_i = (A_i - min_j A_j) / (max_j A_j - min_j A_j).

The min-max normalization and the temperature follow the authors' code for their D4RL runs
(Improbable-AI/harness-offline-rl, implicit_q_learning/dataset_utils.py `RW`, `AW`, and the
d3rlpy version's `alpha = 0.1`); the default temperature here is that 0.1. A trajectory's total
probability is T_i p_i, so long trajectories weigh in proportion to their length as under
uniform sampling.

How it is sampled: the weights are computed once on the host (float64) from the dataset's
episodes; on device a minibatch index is an episode drawn by inverse CDF over the episodes'
probabilities T_i p_i (float32 CDF of #episodes entries), then a transition drawn uniformly
within it, which gives each transition exactly p_i without a CDF over every transition (whose
float32 resolution near 1, ~6e-8, is coarser than a transition's probability in a 1M dataset).

Declared differences from the authors' code: the episodes are the dataset's recorded episodes
(`episode_lengths`, after an algorithm's `prepare_dataset`), including an episode cut short by
the end of a collection stream (theirs split D4RL's flat arrays at terminals and observation
jumps, which also keeps cut episodes); returns are of the dataset's rewards before the loop's
reward scale/bias (a positive scale would not change x, a bias would by bias x T_i); the
regression is least squares on centered data (numpy), which is what sklearn's
LinearRegression computes, including its minimum-norm solution when there are fewer
trajectories than observation dimensions; when all returns (or advantages) are equal, x = 0 and
the sampling is uniform (theirs divide by zero). The authors sample indices in advance on the
host (a cache of draws); here they are drawn on device in the compiled loop from the seed's key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SAMPLERS = ("uniform", "return", "advantage")
DEFAULT_TEMPERATURE = 0.1  # the authors' alpha
KEY = "_sampler"  # the entry of the loop's arrays holding a weighted sampler's tables


def scores(scheme: str, returns: np.ndarray, initial_obs: np.ndarray) -> np.ndarray:
    """Per trajectory the score x in [0, 1] (module docstring): min-max normalized return (RW)
    or advantage over a linear value of the initial observation (AW)."""
    returns = np.asarray(returns, np.float64)
    if scheme == "return":
        raw = returns
    elif scheme == "advantage":
        x = np.asarray(initial_obs, np.float64)
        x_mean, y_mean = x.mean(0), returns.mean()
        coef = np.linalg.lstsq(x - x_mean, returns - y_mean, rcond=None)[0]
        raw = returns - ((x - x_mean) @ coef + y_mean)
    else:
        raise ValueError(f"sampler '{scheme}' has no trajectory weights; samplers: "
                         f"{list(SAMPLERS)}")
    span = raw.max() - raw.min()
    return (raw - raw.min()) / span if span > 0 else np.zeros_like(raw)


def transition_probabilities(scheme: str, temperature: float, rewards: np.ndarray,
                             lengths: np.ndarray, observations: np.ndarray) -> np.ndarray:
    """Per trajectory the probability p_i of each one of its transitions (sum_i T_i p_i = 1)."""
    lengths = np.asarray(lengths, np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    returns = np.add.reduceat(np.asarray(rewards, np.float64), starts)
    x = scores(scheme, returns, np.asarray(observations)[starts])
    logits = x / temperature
    w = np.exp(logits - logits.max())
    return w / float(np.sum(lengths * w))


def tables(scheme: str, temperature: float, rewards: np.ndarray, lengths: np.ndarray,
           observations: np.ndarray) -> dict[str, np.ndarray]:
    """What the device sampler reads: the CDF over episodes of T_i p_i (float32, last entry
    exactly 1), each episode's first index and length."""
    lengths = np.asarray(lengths, np.int64)
    p = transition_probabilities(scheme, temperature, rewards, lengths, observations)
    cdf = np.cumsum(lengths * p)
    cdf = (cdf / cdf[-1]).astype(np.float32)
    cdf[-1] = 1.0
    return {"cdf": cdf, "start": np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int32),
            "length": lengths.astype(np.int32)}


def indices(table: dict[str, jax.Array], key: jax.Array, batch_size: int) -> jax.Array:
    """batch_size transition indices drawn with the probabilities of `tables` (on device)."""
    k_episode, k_offset = jax.random.split(key)
    u = jax.random.uniform(k_episode, (batch_size,))
    episode = jnp.minimum(jnp.searchsorted(table["cdf"], u, side="right"),
                          table["cdf"].shape[0] - 1)
    length = table["length"][episode]
    offset = jnp.minimum(jnp.floor(jax.random.uniform(k_offset, (batch_size,)) * length)
                         .astype(jnp.int32), length - 1)
    return table["start"][episode] + offset


def check(sampler: str, temperature: float) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler '{sampler}' is not one of {list(SAMPLERS)}")
    if not temperature > 0:
        raise ValueError(f"sampler_temperature must be > 0, got {temperature}")
