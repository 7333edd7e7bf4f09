"""Sub-trajectories of a flat transition dataset, on device (jit- and vmap-able): the sampler of
sequence models (baselines/dt.py), reusable by anything that learns from windows of steps.

Episodes are recovered from the flat arrays the offline loop prepares (obs, action, reward,
next_obs, terminal; no episode lengths): a transition ends its episode when it is terminal,
when it is the last row, or when its next observation is not the next row's observation (a
time limit, or the end of a collection stream). Within an episode the datasets store
next_obs[i] == obs[i + 1] exactly (offbench/data/builder.py), and the observation map the
loop applies keeps equal rows equal, so the rule is exact there.

Per row i of episode [start, end):   timestep[i] = i - start,
                                     rtg[i] = sum_{j=i}^{end-1} reward[j]   (undiscounted)

A window of length K starts at a row s (CORL's SequenceDataset: a trajectory drawn with
probability proportional to its length, then a uniform start in it, i.e. s uniform over the
rows): rows s .. s+K-1 clipped to the episode's end, right-padded with zeros, mask 1 on real
rows; timesteps run on through the padding (timestep[s] + 0..K-1), as CORL's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def episode_tables(obs: jax.Array, next_obs: jax.Array, terminal: jax.Array,
                   reward: jax.Array) -> dict[str, jax.Array]:
    """Per row: `end` (exclusive end index of its episode), `timestep` (steps since the
    episode's start) and `rtg` (the undiscounted return-to-go)."""
    n = reward.shape[0]
    rows = jnp.arange(n)
    cut = jnp.any(next_obs[:-1] != obs[1:], axis=tuple(range(1, obs.ndim)))
    last = (terminal > 0) | jnp.concatenate([cut, jnp.ones(1, bool)])  # row ends its episode
    first = jnp.concatenate([jnp.ones(1, bool), last[:-1]])
    start = jax.lax.cummax(jnp.where(first, rows, 0))
    end = jax.lax.cummin(jnp.where(last, rows + 1, n), reverse=True)

    # segmented sum from the right: reversed, each episode's last row opens a segment
    def combine(a, b):
        return b[0] + jnp.where(b[1], 0.0, a[0]), a[1] | b[1]
    rtg, _ = jax.lax.associative_scan(combine, (reward[::-1].astype(jnp.float32), last[::-1]))
    return {"end": end.astype(jnp.int32), "timestep": (rows - start).astype(jnp.int32),
            "rtg": rtg[::-1]}


def windows(data: dict[str, jax.Array], starts: jax.Array, length: int) -> dict[str, jax.Array]:
    """The windows of `length` rows starting at `starts` (batch,): every array of `data` with a
    row per transition except the tables' `end`/`timestep`, gathered as (batch, length, ...) and
    zero-padded past the episode's end, with `mask` (batch, length) and `timestep` (batch,
    length) as in the module docstring. `data` holds episode_tables' fields and the arrays."""
    n = data["end"].shape[0]
    index = starts[:, None] + jnp.arange(length)
    mask = index < data["end"][starts][:, None]
    index = jnp.minimum(index, n - 1)
    out = {}
    for name, value in data.items():
        if name in ("end", "timestep"):
            continue
        rows = value[index]
        keep = mask.reshape(mask.shape + (1,) * (rows.ndim - 2))
        out[name] = jnp.where(keep, rows, jnp.zeros((), rows.dtype))
    out["timestep"] = data["timestep"][starts][:, None] + jnp.arange(length, dtype=jnp.int32)
    out["mask"] = mask.astype(jnp.float32)
    return out


def sample(data: dict[str, jax.Array], key: jax.Array, batch: int, length: int
           ) -> dict[str, jax.Array]:
    """`batch` windows whose starts are uniform over the rows (CORL's sampling)."""
    starts = jax.random.randint(key, (batch,), 0, data["end"].shape[0])
    return windows(data, starts, length)
