"""The critic probe (offbench/reports/probe.py, `offbench probe`): its numbers against a hand
computation with a critic whose Q is known in closed form, every algorithm's q_values reading
its critics (not the targets), and the probe of a real run folder restored from its checkpoint.
`offline.restore` shares the checkpoint-restoring code of resume (tested bit for bit in
test_offline.py)."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from offbench.algorithms import EnvSpec, config_from_dict
from offbench.loops import offline
from offbench.reports import probe
from offbench_baselines import awac, bc, cal_ql, cql, edac, iql, rebrac, sac, sac_n, spot, td3_bc

from conftest import TINY_DATASET

SPEC = EnvSpec(observation_size=3, action_size=2)


def approx(value):
    return pytest.approx(value, rel=1e-5, abs=1e-5)  # float32 arithmetic


def test_probe_numbers_by_hand():
    # Two critics, Q_i(s, a) = c_i + w . a + s_0 (known everywhere); the policy is a constant.
    c, w, policy_action = np.array([1.0, 3.0]), np.array([2.0, -1.0]), np.array([0.5, 0.995])
    fake = types.SimpleNamespace(
        act=lambda state, obs, key, det: jnp.broadcast_to(policy_action, (obs.shape[0], 2)),
        q_values=lambda state, obs, a: c[:, None] + (a @ w)[None] + obs[None, :, 0])
    obs = np.array([[1.0, 0, 0], [-2.0, 0, 0], [0.5, 0, 0]])
    data = np.array([[0.1, 0.2], [-0.3, 0.4], [0.0, -1.0]])
    rand = np.array([[0.9, -0.9], [0.2, 0.2], [-0.5, 0.5]])
    got = probe.probe_state(fake, None, jnp.asarray(obs), jnp.asarray(data), jnp.asarray(rand),
                            jax.random.PRNGKey(0))

    def q(actions):  # (2, 3) by hand
        return np.stack([ci + actions @ w + obs[:, 0] for ci in c])

    pol = np.broadcast_to(policy_action, data.shape)
    assert got["q_data"] == approx(q(data).mean())
    assert got["q_policy"] == approx(q(pol).mean())
    assert got["q_random"] == approx(q(rand).mean())
    # min over critics is critic 0 (c = 1): advantage = w . (pi - a_data), averaged over states
    assert got["policy_advantage"] == approx(((pol - data) @ w).mean())
    assert got["action_gap"] == approx(q(data).mean() - q(rand).mean())
    for name in ("std_data", "std_policy", "std_random"):
        assert got[name] == pytest.approx(1.0)  # the two critics always differ by 2
    assert got["policy_data_mse"] == approx(((pol - data) ** 2).mean())
    assert got["random_data_mse"] == approx(((rand - data) ** 2).mean())
    assert got["saturated"] == pytest.approx(0.5)  # 0.995 > 0.99 in one of two components


def _critic_holder(state):
    return state.sac if hasattr(state, "sac") else state


@pytest.mark.parametrize("module", [sac, sac_n, edac, cql, cal_ql, td3_bc, rebrac, spot, iql,
                                    awac], ids=lambda m: m.__name__.split(".")[-1])
def test_q_values_reads_the_critics_not_the_targets(module):
    config = module.Config(hidden=(8, 8))
    if hasattr(config, "num_critics"):
        config = dataclasses.replace(config, num_critics=3)
    state = module.init(jax.random.PRNGKey(0), SPEC, config)
    holder = _critic_holder(state)
    zeroed = holder.replace(critic=jax.tree.map(jnp.zeros_like, holder.critic))
    state = state.replace(sac=zeroed) if holder is not state else zeroed
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    action = jax.random.uniform(jax.random.PRNGKey(2), (5, 2), minval=-1, maxval=1)
    q = module.q_values(state, obs, action)
    n = getattr(config, "num_critics", 2)
    # all-zero critic parameters give Q = 0 exactly; the (untouched) targets would not
    np.testing.assert_array_equal(np.asarray(q), np.zeros((n, 5)))


TINY = offline.OfflineConfig(updates=200, eval_every=100, eval_episodes=2, checkpoint_every=100,
                             episode_length=50, backend="mujoco")


def test_probe_of_a_restored_run(minari_root, tmp_path):
    config = td3_bc.Config(hidden=(16, 16), batch_size=32)
    out = tmp_path / "run"
    offline.train("td3_bc", TINY_DATASET, 2, TINY, config, out, progress=False, first_seed=3)
    problem, arrays, carry, done = offline.restore(out)
    assert done == 2 and problem.algo is td3_bc
    np.testing.assert_array_equal(np.asarray(carry.algo.steps), [200, 200])
    table = probe.probe_run(out, samples=64)
    assert list(table.seed) == [3, 4] and set(table.updates) == {200}
    metrics = pd.read_csv(out / "metrics.csv")
    last = metrics[metrics.period == 1].set_index("seed").normalized_score
    np.testing.assert_allclose(table.set_index("seed").score, last.loc[[3, 4]])
    # the two seeds are different agents: their critics differ on the same states
    assert table.q_data.nunique() == 2
    assert np.isfinite(table[list(probe.COLUMNS)].to_numpy()).all()
    report = tmp_path / "probe.md"
    probe.write_report([out], report, samples=64)
    assert "| td3_bc" in report.read_text() and report.with_suffix(".csv").exists()


def test_probe_bad_input(minari_root, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a run folder"):
        probe.probe_run(tmp_path)
    out = tmp_path / "bc"
    offline.train("bc", TINY_DATASET, 1, TINY, bc.Config(hidden=(8, 8), batch_size=32), out,
                  progress=False)
    with pytest.raises(ValueError, match="no critic to probe"):
        probe.probe_run(out)
    notes = []  # a sweep's BC cell is left out of a probe report, and said so
    assert probe.with_critics([out], log=notes.append) == []
    assert "bc has no critic" in notes[0]
    with pytest.raises(ValueError, match="samples must be at least 1"):
        probe.probe_run(out, samples=0)
    online = tmp_path / "online"
    online.mkdir()
    (online / "settings.json").write_text(json.dumps({"algorithm": "sac", "online_config": {}}))
    with pytest.raises(ValueError, match="not an offline run"):
        probe.probe_run(online)
    (out / "cell.json").write_text(json.dumps({"config": {"dataset": TINY_DATASET,
                                                          "dataset_sha256": "old"}}))
    monkeypatch.setattr("offbench.data.builder.dataset_fingerprint", lambda dataset: "new")
    with pytest.raises(ValueError, match="older build"):
        probe.probe_run(out)
    monkeypatch.setattr("offbench.data.builder.dataset_fingerprint", lambda dataset: "old")
    with pytest.raises(ValueError, match="no critic to probe"):  # same build: gets that far
        probe.probe_run(out)


def test_config_from_dict_round_trip_and_unknown_key():
    config = sac_n.Config(hidden=(64, 64), num_critics=20)
    record = json.loads(json.dumps(dataclasses.asdict(config)))
    assert config_from_dict(sac_n.Config, record) == config
    with pytest.raises(ValueError, match="no field"):
        config_from_dict(sac_n.Config, {**record, "gone": 1})
