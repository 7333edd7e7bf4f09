"""Cal-QL: its lower-bound term against a float64 numpy computation on a fixed batch, and its
module's settings (CQL's, plus the bound and the mixing ratio)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from offbench.algorithms import EnvSpec
from offbench.loops import o2o
from offbench_baselines import cal_ql, cql

from np_reference import fixed_batch, np_actor, np_critics, np_sample

SPEC = EnvSpec(5, 3)
B, N_ACTIONS = 64, 4


def np_logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def np_q(critic, obs, actions):
    """Q of every critic at (s_b, a_bj), actions (B, n, A) -> (N, B, n)."""
    b, n, a = actions.shape
    q = np_critics(critic, np.repeat(obs, n, axis=0), actions.reshape(b * n, a))
    return q.reshape(q.shape[0], b, n)


def regularizer_inputs(state, batch, key):
    """The Q-values and log-densities the regularizer combines, from the numpy networks and the
    same random draws as cql.conservative_gap (split(key, 3): uniform, pi(.|s), pi(.|s'))."""
    k_random, k_current, k_next = jax.random.split(key, 3)
    obs, next_obs = np.asarray(batch.obs, np.float64), np.asarray(batch.next_obs, np.float64)
    shape = (B, N_ACTIONS, SPEC.action_size)
    uniform = np.asarray(jax.random.uniform(k_random, shape, minval=-1.0, maxval=1.0), np.float64)

    def policy(o, k):
        mean, log_std = np_actor(state.actor, o)
        noise = np.asarray(jax.random.normal(k, shape), np.float64)
        return np_sample(mean[:, None], log_std[:, None], noise)

    a_cur, lp_cur = policy(obs, k_current)
    a_nxt, lp_nxt = policy(next_obs, k_next)
    return {"q_rand": np_q(state.critic, obs, uniform), "q_cur": np_q(state.critic, obs, a_cur),
            "q_nxt": np_q(state.critic, obs, a_nxt), "lp_cur": lp_cur, "lp_nxt": lp_nxt,
            "q_data": np_critics(state.critic, obs, np.asarray(batch.action, np.float64))}


def test_calql_lower_bound_term_by_hand():
    cfg = cal_ql.Config(hidden=(16, 16), cql_n_actions=N_ACTIONS, orthogonal_init=False)
    state = cal_ql.init(jax.random.PRNGKey(1), SPEC, cfg)
    batch, loss_key = fixed_batch(B), jax.random.PRNGKey(5)
    key = jax.random.split(loss_key)[1]  # critic_loss's key for the regularizer
    x = regularizer_inputs(state, batch, key)
    # MC returns at the row's median policy-action Q: the bound binds for about half the actions
    mc = np.median(x["q_cur"][0], axis=1)
    bound = mc[None, :, None]
    by_hand = np.concatenate([x["q_rand"] - SPEC.action_size * np.log(0.5),
                              np.maximum(x["q_nxt"], bound) - x["lp_nxt"],
                              np.maximum(x["q_cur"], bound) - x["lp_cur"]], axis=-1)
    gap = (np_logsumexp(by_hand) - x["q_data"]).mean(axis=1)  # per critic

    batch = batch.replace(extra={"mc_returns": jnp.asarray(mc, jnp.float32)})
    q_data = jnp.asarray(x["q_data"], jnp.float32)
    diff, info = cql.conservative_gap(state.critic, state, batch, q_data, key)
    np.testing.assert_allclose(np.asarray(diff), gap, rtol=1e-5)
    below = np.concatenate([x["q_cur"] < bound, x["q_nxt"] < bound], -1).mean()
    assert 0.2 < below < 0.8
    np.testing.assert_allclose(float(info["calql_bound_rate"]), below, atol=1e-6)
    # the critic loss carries cql_alpha times that term, summed over critics
    _, parts = cql.critic_loss(state.critic, state, batch, loss_key)
    np.testing.assert_allclose(float(parts["cql_loss"]), cfg.cql_alpha * gap.sum(), rtol=1e-5)
    # without the bound the term is smaller (raising Q-values only raises the logsumexp)
    plain = state.replace(config=dataclasses.replace(cfg, calql=False))
    assert float(cql.conservative_gap(state.critic, plain, batch, q_data, key)[0].sum()) < \
        gap.sum() - 1e-3


def test_module_is_cql_with_the_bound_and_mixing_ratio():
    ours, base = cal_ql.Config(), cql.Config()
    assert ours.calql and not base.calql and ours.offline_ratio == 0.5 and ours.calql_online
    differing = {f.name for f in dataclasses.fields(base)
                 if getattr(ours, f.name) != getattr(base, f.name)}
    assert differing == {"calql"}
    assert set(cal_ql.MODES) == {"offline", "o2o"} and cal_ql.DATASET_FIELDS == ("mc_returns",)
    assert cal_ql.update is cql.update and cal_ql.act is cql.act


def assert_orthogonal(kernel, gain):
    """kernel (in, out) is gain times a matrix with orthonormal columns (in >= out) or rows."""
    w = np.asarray(kernel, np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(len(gram)), atol=1e-5 * gain ** 2)


def test_actor_and_critics_initialized_as_the_authors_code():
    """Orthogonal kernels, gain sqrt(2) on hidden layers and 1e-2 on the output layer, zero
    biases, for the actor and every critic (nakamotoo/Cal-QL's orthogonal_init)."""
    state = cal_ql.init(jax.random.PRNGKey(0), SPEC, cal_ql.Config(hidden=(16, 16)))
    actor = state.actor["params"]["MLP_0"]
    critics = state.critic["params"]["VmapCritic_0"]["MLP_0"]
    for i, gain in enumerate((math.sqrt(2), math.sqrt(2), 1e-2)):
        layer = f"Dense_{i}"
        assert_orthogonal(actor[layer]["kernel"], gain)
        np.testing.assert_array_equal(np.asarray(actor[layer]["bias"]), 0.0)
        for member in np.asarray(critics[layer]["kernel"]):
            assert_orthogonal(member, gain)
        np.testing.assert_array_equal(np.asarray(critics[layer]["bias"]), 0.0)
    # the initial policy is near its centre: mean and raw log-std outputs ~1e-2 of the features
    mean, _ = cql.sac.networks(state.config, SPEC)[0].apply(state.actor, fixed_batch().obs)
    assert float(jnp.abs(mean).max()) < 0.2
    # the actor's optimizer state is for these parameters (Adam's moments start at zero)
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state.actor_opt)
               if x.ndim)


def test_online_bound_switch():
    """Fine-tuning keeps the Monte-Carlo bound by default (the authors' code); calql_online=False
    (CORL's switch_calibration) runs cql's update without it. The O2O loop calls online_update."""
    cfg = cal_ql.Config(hidden=(16, 16), cql_n_actions=N_ACTIONS)
    state = cal_ql.init(jax.random.PRNGKey(1), SPEC, cfg)
    batch = fixed_batch(B)
    # a bound above every Q-value, so that it changes the update
    batch = batch.replace(extra={"mc_returns": jnp.full((B,), 5.0)})
    key = jax.random.PRNGKey(2)
    assert o2o.online_view(cal_ql).update is cal_ql.online_update

    def leaves(update, s):
        new, metrics = jax.jit(update)(s, batch, key)
        return [np.asarray(x) for x in jax.tree.leaves(new.critic)], metrics

    bounded, _ = leaves(cal_ql.update, state)
    online, metrics = leaves(cal_ql.online_update, state)
    assert metrics["calql_bound_rate"] > 0.9
    for a, b in zip(online, bounded, strict=True):
        np.testing.assert_array_equal(a, b)

    off = state.replace(config=dataclasses.replace(cfg, calql_online=False))
    online_off, metrics = leaves(cal_ql.online_update, off)
    assert "calql_bound_rate" not in metrics
    plain = state.replace(config=dataclasses.replace(cfg, calql=False))
    unbounded, _ = leaves(cql.update, plain)
    for a, b in zip(online_off, unbounded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(online_off, bounded, strict=True)) > 1e-6
    new, _ = jax.jit(cal_ql.online_update)(off, batch, key)
    assert new.config == off.config  # the offline setting is left as it was
