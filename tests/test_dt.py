"""The Decision Transformer (baselines/dt.py) and its trajectory sampler
(offbench/data/trajectories.py): returns-to-go, timesteps and padding against hand-computed
values, the causal mask, the action loss against numpy, `offbench check`, a tiny run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from offbench import cli
from offbench.algorithms import EnvSpec
from offbench.data import trajectories
from offbench_baselines import dt

from conftest import TINY_DATASET


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


# ---- the Decision Transformer ----

SPEC = EnvSpec(3, 2)
SMALL = dt.Config(context=4, layers=2, heads=2, embed=16, batch_size=5, attention_dropout=0.0,
                  residual_dropout=0.0, embedding_dropout=0.0, max_timestep=50)


def small_arrays():
    rng = np.random.default_rng(0)
    n = 40
    arrays = {"obs": rng.normal(size=(n, 3)).astype(np.float32),
              "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
              "reward": rng.normal(size=n).astype(np.float32),
              "terminal": (np.arange(n) % 10 == 9).astype(np.float32)}
    arrays["next_obs"] = np.roll(arrays["obs"], -1, axis=0)
    return arrays


@functools.cache
def small_state():
    arrays = {k: jnp.asarray(v) for k, v in small_arrays().items()}
    return jax.jit(lambda k: dt.init(k, SPEC, SMALL, arrays))(jax.random.PRNGKey(0))


def inputs(seed=1, batch=2, k=4):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(batch, k, 3)), jnp.float32),
            jnp.asarray(rng.uniform(-1, 1, (batch, k, 2)), jnp.float32),
            jnp.asarray(rng.normal(size=(batch, k)), jnp.float32),
            jnp.asarray(rng.integers(0, 50, (batch, k)), jnp.int32), jnp.ones((batch, k))]


def test_causal_mask_later_tokens_do_not_change_earlier_outputs():
    state = small_state()
    apply = jax.jit(lambda *x: dt.network(state).apply(state.params, *x))
    base = np.asarray(apply(*inputs()))
    for j in range(4):
        for which in (0, 1, 2):  # perturb s_j, a_j or R_j
            x = inputs()
            x[which] = x[which].at[:, j].add(3.0)
            out = np.asarray(apply(*x))
            np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6)
            # a_j is read at the token s_j: it sees R_j and s_j, not a_j
            changed = not np.allclose(out[:, j], base[:, j], atol=1e-6)
            assert changed == (which != 1), (j, which)


def test_action_loss_against_numpy():
    state = small_state()
    w = trajectories.sample(state.data, jax.random.PRNGKey(3), 6, 4)
    assert 0 < w["mask"].mean() < 1  # some padding in this batch
    value, _ = dt.loss(state.params, state, w, jax.random.PRNGKey(0))
    pred = np.asarray(dt.network(state).apply(state.params, w["obs"], w["action"], w["rtg"],
                                              w["timestep"], w["mask"]), np.float64)
    error = (pred - np.asarray(w["action"], np.float64)) ** 2
    expected = (error * np.asarray(w["mask"])[..., None]).sum() / error.size
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # the state's returns-to-go: scaled by rtg_scale, episodes of 10 rows ended by terminals
    rewards = np.asarray(small_arrays()["reward"], np.float64)
    expected = [0.001 * rewards[i:(i // 10 + 1) * 10].sum() for i in range(40)]
    np.testing.assert_allclose(state.data["rtg"], expected, rtol=1e-5, atol=1e-7)


def test_evaluation_context_is_corls():
    """act_carry at step t equals the network on the unpadded last min(t+1, K) steps (CORL's
    eval_rollout): R from the target minus the scaled rewards, timesteps 0.., a dummy last
    action."""
    state = small_state()
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(7, 1, 3)).astype(np.float32)
    rewards = rng.normal(size=7).astype(np.float32)
    carry = dt.init_act_carry(state, 1)
    step = jax.jit(lambda c, o, r: dt.act_carry(state, c, o, r, None, True))
    net = jax.jit(lambda *x: dt.network(state).apply(state.params, *x))
    actions, rtg = [], [float(state.target)]
    for t in range(7):
        a, carry = step(carry, jnp.asarray(obs[t]),
                        jnp.asarray(rewards[t - 1:t] if t else np.zeros(1, np.float32)))
        if t:
            rtg.append(rtg[-1] - 0.001 * float(rewards[t - 1]))
        lo = max(0, t + 1 - 4)
        past = np.concatenate([np.stack(actions[lo:t]).reshape(-1, 2)
                               if t > lo else np.zeros((0, 2)), np.zeros((1, 2))])
        ref = net(jnp.asarray(obs[lo:t + 1, 0])[None], jnp.asarray(past, jnp.float32)[None],
            jnp.asarray(rtg[lo:t + 1])[None], jnp.arange(lo, t + 1)[None],
            jnp.ones((1, t + 1 - lo)))[0, -1]
        np.testing.assert_allclose(np.asarray(a[0]), np.asarray(ref), atol=1e-5)
        actions.append(np.asarray(a[0]))


TINY = ["context=4", "layers=1", "embed=16", "batch_size=8", "max_timestep=50"]


def test_dt_keeps_the_contract():
    from offbench.harness.check import check

    lines = []
    assert check("dt", TINY, updates=2, log=lines.append), "\n".join(lines)


def test_offbench_run_dt(minari_root, tmp_path):
    flags = ["--updates", "40", "--eval-every", "20", "--eval-episodes", "2",
             "--checkpoint-every", "40", "--episode-length", "20", "--backend", "mujoco"]
    out = tmp_path / "run"
    sets = [x for o in TINY for x in ("--set", o)]
    assert cli.main(["run", "dt", TINY_DATASET, "--seeds", "2", *flags, *sets,
                     "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 4 and np.isfinite(metrics.dt_loss).all()
    assert np.isfinite(metrics.eval_return).all() and not metrics.diverged.any()


def test_recovered_episodes_match_the_datasets_lengths(minari_root):
    """On a real dataset (prepared as the loop does, observations standardized) the episodes
    the sampler recovers are the dataset's own (metadata episode_lengths)."""
    from offbench.data import load
    from offbench.loops import offline

    dataset = load(TINY_DATASET)
    lengths = np.asarray(dataset.metadata["episode_lengths"])
    arrays = offline.prepare(dt, dt.Config(), dataset).arrays
    tables = trajectories.episode_tables(arrays["obs"], arrays["next_obs"], arrays["terminal"],
                                         arrays["reward"])
    np.testing.assert_array_equal(tables["end"], np.repeat(np.cumsum(lengths), lengths))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    np.testing.assert_array_equal(tables["timestep"], np.arange(len(starts)) - starts)
    assert len(lengths) > 3


def test_act_carry_hooks_go_together():
    import types

    from offbench.algorithms import contract

    module = types.ModuleType("half_memory")
    for name in ("init", "update", "act", "act_carry"):
        setattr(module, name, lambda *a: None)
    module.Config, module.MODES = dt.Config, ("offline",)
    with pytest.raises(ValueError, match="act_carry` and `init_act_carry"):
        contract(module)
    module.init_act_carry = lambda *a: None
    assert contract(module).act_carry is module.act_carry
    assert contract(dt).init_act_carry is dt.init_act_carry
