"""The Decision Transformer (baselines/dt.py) and its trajectory sampler
(offbench/data/trajectories.py): returns-to-go, timesteps and padding against hand-computed
values, the causal mask, the action loss against numpy, `offbench check`, a tiny run."""

import jax
import jax.numpy as jnp
import numpy as np

from offbench.data import trajectories


def hand_made():
    """7 rows, 3 episodes: rows 0-2 end by a termination (row 2's next_obs equals row 3's obs,
    so only the terminal flag separates them), rows 3-4 by a cut (row 4's next_obs is not row
    5's obs), rows 5-6 by the end of the data."""
    obs = np.arange(7, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    next_obs = obs + 1
    next_obs[4] = 99.0
    return {"obs": obs, "next_obs": next_obs,
            "action": np.arange(7, dtype=np.float32)[:, None] / 10,
            "terminal": np.array([0, 0, 1, 0, 0, 0, 0], np.float32),
            "reward": np.array([1, 2, 3, 10, 20, 100, 200], np.float32)}


def test_episode_tables_and_windows_by_hand():
    d = {k: jnp.asarray(v) for k, v in hand_made().items()}
    tables = trajectories.episode_tables(d["obs"], d["next_obs"], d["terminal"], d["reward"])
    np.testing.assert_array_equal(tables["end"], [3, 3, 3, 5, 5, 7, 7])
    np.testing.assert_array_equal(tables["timestep"], [0, 1, 2, 0, 1, 0, 1])
    np.testing.assert_allclose(tables["rtg"], [6, 5, 3, 30, 20, 300, 200])
    data = {**tables, "obs": d["obs"], "action": d["action"]}
    w = trajectories.windows(data, jnp.array([1, 4, 0, 6]), 3)
    np.testing.assert_array_equal(w["mask"], [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(w["rtg"], [[5, 3, 0], [20, 0, 0], [6, 5, 3], [200, 0, 0]])
    np.testing.assert_array_equal(w["timestep"], [[1, 2, 3], [1, 2, 3], [0, 1, 2], [1, 2, 3]])
    np.testing.assert_allclose(w["obs"][..., 0], [[1, 2, 0], [4, 0, 0], [0, 1, 2], [6, 0, 0]])
    np.testing.assert_allclose(w["action"][..., 0],
                               [[.1, .2, 0], [.4, 0, 0], [0, .1, .2], [.6, 0, 0]])
    assert w["obs"].shape == (4, 3, 2) and w["action"].shape == (4, 3, 1)
    # the sampler: starts uniform over rows, each window one of the above kind
    s = trajectories.sample(data, jax.random.PRNGKey(0), 64, 3)
    assert s["mask"][:, 0].all() and set(np.unique(s["timestep"][:, 0])) <= {0, 1, 2}
