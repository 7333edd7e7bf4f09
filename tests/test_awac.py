"""AWAC against an independent float64 numpy reference written from the paper's equations
(CORL's variant: one sampled policy action for the advantage's baseline, weights clipped)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import awac

from np_reference import as_np, fixed_batch, np_critics, np_mlp

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99
LOG_STD = np.array([0.3, -0.7, 2.5])  # the last one above log_std_max = 2: clipped
FAST = dict(tau=0.05, actor_lr=1e-3, critic_lr=1e-3)
# Compiled once each: far cheaper than op-by-op dispatch on a busy CPU.
UPDATE = jax.jit(awac.update)
CRITIC_LOSS, ACTOR_LOSS = jax.jit(awac.critic_loss), jax.jit(awac.actor_loss)
ACT = jax.jit(awac.act, static_argnums=3)
INIT = jax.jit(awac.init, static_argnums=(1, 2))


def grad_of(loss_fn):
    return jax.jit(jax.grad(lambda params, *args: loss_fn(params, *args)[0]))


def np_actor(params, obs, lo=-20.0, hi=2.0):
    """mean = MLP(s), unsquashed; log-std a clipped state-independent vector."""
    p = params["params"]
    mean = np_mlp(p["MLP_0"], obs)
    return mean, np.broadcast_to(np.clip(np.asarray(p["log_std"], np.float64), lo, hi),
                                 mean.shape)


def np_log_normal(mean, log_std, a):
    var = np.exp(log_std) ** 2
    return np.sum(-0.5 * np.log(2 * np.pi * var) - (a - mean) ** 2 / (2 * var), axis=-1)


def np_policy_action(actor, obs, noise):
    mean, log_std = np_actor(actor, obs)
    return np.clip(mean + np.exp(log_std) * noise, -1.0, 1.0)


def make_state(**kw):
    cfg = awac.Config(hidden=(16, 16, 16), **kw)
    state = INIT(jax.random.PRNGKey(1), SPEC, cfg)
    other = INIT(jax.random.PRNGKey(2), SPEC, cfg)
    actor = {"params": {**state.actor["params"], "log_std": jnp.asarray(LOG_STD, jnp.float32)}}
    # distinct online and target critics, so the test sees which one each term uses
    return state.replace(target_critic=other.critic, actor=actor)


def reference_critic_loss(state, critic, b, key):
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    next_a = np_policy_action(state.actor, b.next_obs, noise)
    next_q = np_critics(state.target_critic, b.next_obs, next_a).min(0)
    target = b.reward + GAMMA * (1 - b.terminal) * next_q
    q1, q2 = np_critics(critic, b.obs, b.action)
    return np.mean((q1 - target) ** 2) + np.mean((q2 - target) ** 2), target


def test_critic_loss_matches_reference():
    state, batch, key = make_state(), fixed_batch(), jax.random.PRNGKey(3)
    loss, info = CRITIC_LOSS(state.critic, state, batch, key)
    expected, target = reference_critic_loss(state, state.critic, as_np(batch), key)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["target_mean"]), target.mean(), rtol=1e-5, atol=1e-6)


def reference_weights(state, critic, b, key, lam):
    """adv = min Q(s, a) - min Q(s, a~), a~ one clipped sample of pi(.|s); online critics."""
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    pi_a = np_policy_action(state.actor, b.obs, noise)
    adv = (np_critics(critic, b.obs, b.action).min(0) - np_critics(critic, b.obs, pi_a).min(0))
    return np.minimum(np.exp(adv / lam), 100.0), adv


@pytest.mark.parametrize("lam", [1.0, 0.02])
def test_actor_loss_matches_reference(lam):
    state, batch, key = make_state(awac_lambda=lam), fixed_batch(), jax.random.PRNGKey(5)
    loss, info = ACTOR_LOSS(state.actor, state, batch, key)
    b = as_np(batch)
    weights, adv = reference_weights(state, state.critic, b, key, lam)
    if lam == 0.02:  # the clip at 100 is exercised
        assert 0 < np.sum(weights == 100.0) < len(weights)
    logp = np_log_normal(*np_actor(state.actor, b.obs), b.action)
    np.testing.assert_allclose(float(loss), -np.mean(weights * logp), rtol=1e-5)
    np.testing.assert_allclose(float(info["adv_mean"]), adv.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["weight_mean"]), weights.mean(), rtol=1e-5)


def jnp_actor_loss(params, weights, obs, action):
    """The AWR loss written out in plain jnp, for jax.grad."""
    p = params["params"]
    h = obs
    for i in range(4):
        h = h @ p["MLP_0"][f"Dense_{i}"]["kernel"] + p["MLP_0"][f"Dense_{i}"]["bias"]
        h = jax.nn.relu(h) if i < 3 else h
    var = jnp.exp(2 * jnp.clip(p["log_std"], -20.0, 2.0))
    logp = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * var) - (action - h) ** 2 / (2 * var), axis=-1)
    return -jnp.mean(weights * logp)


def test_actor_gradient_matches_plain_reference():
    state, batch, key = make_state(awac_lambda=0.02), fixed_batch(), jax.random.PRNGKey(6)
    grads = grad_of(awac.actor_loss)(state.actor, state, batch, key)
    weights, _ = reference_weights(state, state.critic, as_np(batch), key, 0.02)
    expected = jax.jit(jax.grad(jnp_actor_loss))(state.actor, jnp.asarray(weights, jnp.float32),
                                                 batch.obs, batch.action)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        # float32 sums over the batch in a different order: the error scales with the layer's
        # largest gradient, not with each (possibly tiny) element
        want = np.asarray(want)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())
    assert float(grads["params"]["log_std"][2]) == 0.0  # clipped: no gradient
    assert abs(float(grads["params"]["log_std"][0])) > 1e-3


def test_critic_gradient_matches_finite_differences():
    state, batch, key = make_state(), fixed_batch(), jax.random.PRNGKey(7)
    grads = grad_of(awac.critic_loss)(state.critic, state, batch, key)
    path = ("params", "VmapCritic_0", "MLP_0", "Dense_2", "kernel")
    g = grads
    for k in path:
        g = g[k]

    def loss_at(delta):
        params = jax.tree.map(lambda x: np.array(x, np.float64), state.critic)
        leaf = params
        for k in path[:-1]:
            leaf = leaf[k]
        leaf[path[-1]][0, 4, 5] += delta
        return reference_critic_loss(state, params, as_np(batch), key)[0]

    eps = 1e-5
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(numeric) > 1e-4
    np.testing.assert_allclose(float(g[0, 4, 5]), numeric, rtol=1e-5, atol=1e-6)


def test_update_order_and_targets():
    """The critic steps first; the actor's advantage uses the UPDATED critic; the targets are a
    Polyak average toward it."""
    state, batch, key = make_state(**FAST), fixed_batch(), jax.random.PRNGKey(0)
    new, metrics = UPDATE(state, batch, key)
    k_critic, k_actor = jax.random.split(key)
    np.testing.assert_allclose(float(metrics["critic_loss"]),
                               float(CRITIC_LOSS(state.critic, state, batch, k_critic)[0]),
                               rtol=1e-5)
    with_new_q = float(ACTOR_LOSS(state.actor, state.replace(critic=new.critic), batch,
                                  k_actor)[0])
    with_old_q = float(ACTOR_LOSS(state.actor, state, batch, k_actor)[0])
    np.testing.assert_allclose(float(metrics["actor_loss"]), with_new_q, rtol=1e-5)
    assert abs(with_new_q - with_old_q) > 1e-4 * abs(with_new_q)  # the test can tell
    assert all(np.ndim(v) == 0 and np.isfinite(float(v)) for v in metrics.values())
    tau = state.config.tau
    for online, old_target, new_target in zip(jax.tree.leaves(new.critic),
                                              jax.tree.leaves(state.target_critic),
                                              jax.tree.leaves(new.target_critic), strict=True):
        expected = tau * np.asarray(online) + (1 - tau) * np.asarray(old_target)
        np.testing.assert_allclose(np.asarray(new_target), expected, rtol=1e-6, atol=1e-7)


def test_act_is_the_clipped_mean_or_a_clipped_sample():
    state, batch = make_state(), fixed_batch()
    # a mean well outside [-1, 1] for some inputs (it is not squashed)
    params = jax.tree.map(lambda x: x, state.actor)
    params["params"]["MLP_0"]["Dense_3"]["kernel"] *= 20.0
    state = state.replace(actor=params)
    b = as_np(batch)
    mean, log_std = np_actor(state.actor, b.obs)
    assert np.abs(mean).max() > 1.5
    det = np.asarray(ACT(state, batch.obs, jax.random.PRNGKey(0), True))
    np.testing.assert_allclose(det, np.clip(mean, -1, 1), rtol=1e-5, atol=1e-6)
    key = jax.random.PRNGKey(8)
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    np.testing.assert_allclose(np.asarray(ACT(state, batch.obs, key, False)),
                               np.clip(mean + np.exp(log_std) * noise, -1, 1), rtol=1e-5,
                               atol=1e-6)


def test_learns_q_and_the_better_action():
    """A one-state bandit, every transition terminal, reward 1 when a[0] > 0 else 0, half and
    half: Q -> r on the data, and the policy's mean of a[0] (+-0.5 in the data) -> the weighted
    mean with weights exp((Q - V) / lambda), whatever V is (it cancels):
    0.5 * (e^(1/lambda) - e^0) / (e^(1/lambda) + e^0) = 0.5 * tanh(0.5 / lambda), 0.4526 at the
    default lambda 0.3333."""
    n = 64
    rng = np.random.default_rng(1)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    action = np.c_[0.5 * sign, rng.uniform(-0.5, 0.5, (n, 2))]
    obs = np.tile(rng.normal(size=(1, 5)), (n, 1))
    reward = (sign > 0).astype(np.float32)
    batch = fixed_batch().replace(obs=jnp.asarray(obs, jnp.float32),
                                  next_obs=jnp.asarray(obs, jnp.float32),
                                  action=jnp.asarray(action, jnp.float32),
                                  reward=jnp.asarray(reward), terminal=jnp.ones(n))
    state = INIT(jax.random.PRNGKey(1), SPEC, awac.Config(hidden=(16, 16, 16), **FAST))
    for key in jax.random.split(jax.random.PRNGKey(0), 1500):
        state, _ = UPDATE(state, batch, key)
    q = np_critics(state.critic, obs, action)
    assert np.abs(q - reward).max() < 0.1, np.abs(q - reward).max()
    mean = float(ACT(state, batch.obs[:1], jax.random.PRNGKey(0), True)[0, 0])
    assert abs(mean - 0.5 * np.tanh(0.5 / 0.3333)) < 0.02, mean


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="awac_lambda"):
        awac.init(jax.random.PRNGKey(0), SPEC, awac.Config(awac_lambda=0.0))


def test_default_lambda_is_corls_locomotion_value():
    """CORL's locomotion configs (configs/offline/awac/*/*.yaml) all set awac_lambda: 0.3333;
    the weight of an advantage of 1 is then exp(1 / 0.3333) = exp(3.0003) = 20.0916, not the
    script default's exp(1 / 1.0) = 2.718."""
    from offbench_baselines.iql import awr_weights

    config = awac.Config()
    assert config.awac_lambda == 0.3333
    weight = awr_weights(jnp.array([1.0]), 1.0 / config.awac_lambda, config.max_weight)
    np.testing.assert_allclose(np.asarray(weight), [20.0916], rtol=1e-5)
