"""WSRL: after pre-training, the warm-up rollouts come from the frozen pre-trained policy (its
parameters do not change during warm-up, and the stored actions are its actions), and from then
on no dataset transition is ever sampled or stored (offline share 0 in every online batch)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
from test_o2o import synthetic_prepared

from offbench.loops import o2o
from offbench_baselines import cql, rlpd, wsrl

CFG = wsrl.Config(hidden=(16,), num_critics=3, batch_size=8, cql_n_actions=2, utd=2)


def test_wsrl_declares_its_o2o_settings():
    cfg = o2o.resolve(o2o.MixedConfig(mode="o2o"), wsrl.Config())
    assert cfg.offline_ratio == 0.0 and cfg.warmup_steps == 5000
    assert cfg.warmup_actions == "policy" and cfg.utd == 4
    assert o2o.offline_count(256, cfg.offline_ratio) == 0
    base = wsrl.Config()
    # the authors' locomotion settings (zhouzypaul/wsrl configs and scripts/locomotion)
    assert not base.calql and base.cql_alpha == 5.0 and base.cql_max_target_backup
    assert base.num_critics == 10 and base.num_target_critics == 2
    assert base.critic_layer_norm and base.actor_layer_norm and base.hidden == (256, 256)
    assert (base.actor_lr, base.critic_lr, base.temperature_lr) == (1e-4, 3e-4, 1e-4)
    assert base.target_entropy == 0.0 and not base.backup_entropy and base.actor_q == "min"
    # the loop's own flags still win
    cfg = o2o.resolve(o2o.MixedConfig(mode="o2o", warmup_steps=0, offline_ratio=0.5), base)
    assert cfg.warmup_steps == 0 and cfg.offline_ratio == 0.5


def probe():
    """WSRL whose sampled action is its deterministic one (so a stored action can be checked
    against the frozen policy), and whose online step reports how many of its rows came from
    the dataset (synthetic dataset rewards are 1000; hopper's env rewards never come near)."""
    def act(state, obs, key, deterministic):
        return wsrl.act(state, obs, key, True)

    def online_update(state, batch, key):
        state, info = wsrl.online_update(state, batch, key)
        return state, {**info, "offline_rows": jnp.sum(batch.reward > 500.0).astype(jnp.float32)}

    return types.SimpleNamespace(MODES=wsrl.MODES, Config=wsrl.Config, init=wsrl.init,
                                 act=act, update=wsrl.update, online_update=online_update,
                                 DATASET_FIELDS=wsrl.DATASET_FIELDS,
                                 SKIPS_METRICS=wsrl.SKIPS_METRICS)


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                    strict=True))


def test_warmup_uses_the_frozen_policy_and_no_offline_data_is_ever_sampled():
    prepared = synthetic_prepared()
    prepared.arrays["mc_returns"] = jnp.zeros_like(prepared.arrays["reward"])
    # periods: 0 offline (10 updates), 1 warm-up (10 env steps), 2-3 online learning
    config = o2o.resolve(o2o.MixedConfig(mode="o2o", offline_updates=10, online_steps=30,
                                         eval_every=10, eval_episodes=1, episode_length=5,
                                         warmup_steps=10, backend="mujoco"), CFG)
    problem = o2o.Problem(probe(), CFG, "hopper", config, prepared)
    assert problem.n_offline == 0
    arrays = prepared.arrays
    chunk = jax.jit(o2o.make_chunk(problem, 1))
    carry = o2o.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
    outs, carries = [], []
    for p in range(4):
        carry, (out, _) = chunk(carry, p, arrays)
        outs.append(jax.tree.map(np.asarray, out))
        carries.append(carry)
    pretrained, warmed = carries[0].algo, carries[1].algo

    # warm-up: parameters exactly as pre-trained, 10 transitions stored, all acted by that policy
    assert leaves_equal(pretrained, warmed)
    buffer = carries[1].buffer
    assert int(buffer.size) == 10
    obs = np.asarray(buffer.data.obs[:10])
    np.testing.assert_allclose(np.asarray(buffer.data.action[:10]),
                               np.asarray(wsrl.act(pretrained, obs, jax.random.PRNGKey(0), True)),
                               atol=1e-6)
    assert np.isnan(outs[1]["critic_loss"]).all()  # no update in warm-up

    # online: env data only, in every minibatch and in the buffer; the online step is SAC's
    for out in outs[2:]:
        assert out["offline_rows"][0] == 0.0 and np.isfinite(out["critic_loss"][0])
        assert np.isnan(out["cql_loss"][0])  # no conservative term online
    assert np.isfinite(outs[0]["cql_loss"][0]) and np.isnan(outs[0]["offline_rows"][0])
    final = carries[-1].buffer
    assert int(final.size) == 30
    assert (np.asarray(final.data.reward[:30]) < 500.0).all()
    assert not leaves_equal(warmed.actor, carries[-1].algo.actor)  # it does learn online


def test_online_update_is_rlpds_sac_step_on_the_cql_state():
    state = wsrl.init(jax.random.PRNGKey(0), o2o.offline.EnvSpec(4, 2), CFG)
    assert isinstance(state, cql.CQLState)
    from offbench.algorithms import Transition
    batch = Transition(obs=jnp.ones((8, 4)), action=jnp.zeros((8, 2)), reward=jnp.ones(8),
                       next_obs=jnp.ones((8, 4)), terminal=jnp.zeros(8))
    key = jax.random.PRNGKey(3)
    ours, info = wsrl.online_update(state, batch, key)
    theirs, _ = rlpd.update(state, batch, key)
    assert leaves_equal(ours, theirs) and "cql_loss" not in info
