"""Cal-QL: its lower-bound term against a float64 numpy computation on a fixed batch, and its
module's settings (CQL's, plus the bound and the mixing ratio)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from baselines import cal_ql, cql
from offbench.algorithms import EnvSpec

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
    assert ours.calql and not base.calql and ours.offline_ratio == 0.5
    differing = {f.name for f in dataclasses.fields(base)
                 if getattr(ours, f.name) != getattr(base, f.name)}
    assert differing == {"calql"}
    assert set(cal_ql.MODES) == {"offline", "o2o"} and cal_ql.DATASET_FIELDS == ("mc_returns",)
    assert cal_ql.update is cql.update and cal_ql.act is cql.act
