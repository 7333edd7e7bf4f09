"""SAC against an independent float64 numpy reference written from the paper's equations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import sac

from np_reference import as_np, fixed_batch, get, np_actor, np_critics, np_sample, perturbed

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99


def make_state(num_critics=2, num_target=2, **kw):
    cfg = sac.Config(hidden=(16, 16), num_critics=num_critics, num_target_critics=num_target,
                     init_temperature=0.3, **kw)
    state = sac.init(jax.random.PRNGKey(1), SPEC, cfg)
    # distinct online and target critics, so the test sees which one each term uses
    other = sac.init(jax.random.PRNGKey(2), SPEC, cfg)
    return state.replace(target_critic=other.critic)


@pytest.mark.parametrize("num_critics,num_target", [(2, 2), (10, 2), (5, 3)])
def test_critic_loss_matches_reference(num_critics, num_target):
    state, batch, key = make_state(num_critics, num_target), fixed_batch(), jax.random.PRNGKey(3)
    loss, info = sac.critic_loss(state.critic, state, batch, key)
    # the same random draws the implementation makes (inputs, not computations)
    k_action, k_subset = jax.random.split(key)
    noise = np.asarray(jax.random.normal(k_action, (64, 3)), np.float64)
    subset = np.asarray(jax.random.choice(k_subset, num_critics, (num_target,), replace=False))
    b = as_np(batch)
    next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)
    next_q = np_critics(state.target_critic, b.next_obs, next_a)
    alpha = np.exp(float(state.log_alpha))
    target = b.reward + GAMMA * (1 - b.terminal) * (next_q[subset].min(0) - alpha * next_logp)
    q = np_critics(state.critic, b.obs, b.action)
    expected = 0.5 * np.sum(np.mean((q - target) ** 2, axis=1))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["q_mean"]), q.mean(), rtol=1e-5, atol=1e-6)


def test_two_of_two_ensemble_is_clipped_double_q():
    state, batch, key = make_state(2, 2), fixed_batch(), jax.random.PRNGKey(4)
    loss, _ = sac.critic_loss(state.critic, state, batch, key)
    k_action, _ = jax.random.split(key)
    noise = np.asarray(jax.random.normal(k_action, (64, 3)), np.float64)
    b = as_np(batch)
    next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)
    q1, q2 = np_critics(state.target_critic, b.next_obs, next_a)
    alpha = np.exp(float(state.log_alpha))
    target = b.reward + GAMMA * (1 - b.terminal) * (np.minimum(q1, q2) - alpha * next_logp)
    q = np_critics(state.critic, b.obs, b.action)
    expected = 0.5 * ((q[0] - target) ** 2).mean() + 0.5 * ((q[1] - target) ** 2).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def np_actor_loss(actor, state, b, noise, actor_q):
    """mean(alpha log pi(a|s) - Q(s, a)), a = the reparameterized sample; also log pi."""
    a, logp = np_sample(*np_actor(actor, b.obs), noise)
    q = np_critics(state.critic, b.obs, a)
    q = q.min(0) if actor_q == "min" else q.mean(0)
    return np.mean(np.exp(float(state.log_alpha)) * logp - q), logp


@pytest.mark.parametrize("actor_q", ["min", "mean"])
def test_actor_loss_matches_reference(actor_q):
    state = make_state(3, 2, actor_q=actor_q)
    batch, key = fixed_batch(), jax.random.PRNGKey(5)
    loss, info = sac.actor_loss(state.actor, state, batch, key)
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    expected, logp = np_actor_loss(state.actor, state, as_np(batch), noise, actor_q)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["entropy"]), -logp.mean(), rtol=1e-5)


def test_gradients_match_finite_differences():
    """d(critic loss)/d(one weight) from jax.grad vs a central difference on the reference."""
    state, batch, key = make_state(2, 2), fixed_batch(), jax.random.PRNGKey(6)
    grads = jax.grad(lambda p: sac.critic_loss(p, state, batch, key)[0])(state.critic)
    kernel = ("params", "VmapCritic_0", "MLP_0", "Dense_1", "kernel")
    g = grads
    for k in kernel:
        g = g[k]

    def loss_at(delta):
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), state.critic)
        leaf = params
        for k in kernel[:-1]:
            leaf = leaf[k]
        leaf["kernel"][1, 2, 3] += delta
        k_action, _ = jax.random.split(key)
        noise = np.asarray(jax.random.normal(k_action, (64, 3)), np.float64)
        b = as_np(batch)
        next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)
        target = b.reward + GAMMA * (1 - b.terminal) * (
            np_critics(state.target_critic, b.next_obs, next_a).min(0)
            - np.exp(float(state.log_alpha)) * next_logp)
        q = np_critics(params, b.obs, b.action)
        return 0.5 * np.sum(np.mean((q - target) ** 2, axis=1))

    eps = 1e-5
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(g[1, 2, 3]), numeric, rtol=1e-5, atol=1e-6)


# the SAC actor loss is also SAC-N's, EDAC's and (after its behaviour-cloning phase) CQL's
@pytest.mark.parametrize("actor_q", ["min", "mean"])
@pytest.mark.parametrize("path,index", [
    (("params", "MLP_0", "Dense_0", "kernel"), (2, 7)),
    (("params", "MLP_0", "Dense_2", "kernel"), (4, 1)),    # a mean output
    (("params", "MLP_0", "Dense_2", "kernel"), (4, 4)),    # a log-std output
])
def test_actor_gradient_matches_finite_differences(actor_q, path, index):
    """d(actor loss)/d(one actor weight), through the reparameterized tanh-Gaussian sample and
    its log-probability, jax.grad vs a central difference of the reference (noise held fixed)."""
    state = make_state(3, 2, actor_q=actor_q)
    batch, key = fixed_batch(), jax.random.PRNGKey(5)
    grads = jax.grad(lambda p: sac.actor_loss(p, state, batch, key)[0])(state.actor)
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    b, eps = as_np(batch), 1e-5
    numeric = (np_actor_loss(perturbed(state.actor, path, index, eps), state, b, noise, actor_q)[0]
               - np_actor_loss(perturbed(state.actor, path, index, -eps), state, b, noise,
                               actor_q)[0]) / (2 * eps)
    assert abs(numeric) > 1e-5
    np.testing.assert_allclose(float(get(grads, path)[index]), numeric, rtol=1e-5)


@pytest.mark.parametrize("entropy,target", [(1.7, -3.0), (-4.2, -3.0)])
def test_temperature_loss_and_gradient_by_hand(entropy, target):
    """loss = alpha (H - target) with alpha = exp(log_alpha): d/d log_alpha = alpha (H - target),
    so the temperature falls while the entropy is above its target and rises below it."""
    log_alpha = jnp.log(jnp.float32(0.3))
    loss, grad = jax.value_and_grad(sac.temperature_loss)(log_alpha, jnp.float32(entropy), target)
    np.testing.assert_allclose(float(loss), 0.3 * (entropy - target), rtol=1e-5)
    np.testing.assert_allclose(float(grad), 0.3 * (entropy - target), rtol=1e-5)


def test_temperature_moves_entropy_toward_target():
    state, batch = make_state(2, 2), fixed_batch()
    for target, direction in ((-100.0, -1), (100.0, +1)):  # entropy above / below the target
        cfg = dataclasses.replace(state.config, target_entropy=target)
        new, metrics = jax.jit(sac.update)(state.replace(config=cfg), batch, jax.random.PRNGKey(0))
        assert np.sign(float(new.log_alpha - state.log_alpha)) == direction
        assert all(np.isfinite(float(v)) for v in metrics.values())


def test_critic_learns_a_known_value():
    """Terminal transitions with reward 1: every Q must converge to exactly 1."""
    state = make_state(2, 2)
    batch = fixed_batch().replace(reward=jnp.ones(64), terminal=jnp.ones(64))

    @jax.jit
    def train(state):
        def body(s, k):
            return sac.update(s, batch, k)
        return jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(0), 3000))

    state, _ = train(state)
    q = sac.networks(state.config, SPEC)[1].apply(state.critic, batch.obs, batch.action)
    err = np.abs(np.asarray(q) - 1.0)  # from |Q| ~ 0.1 at init
    assert err.mean() < 0.03 and err.max() < 0.15, (err.mean(), err.max())


def test_target_network_is_a_polyak_average():
    state, batch = make_state(2, 2), fixed_batch()
    new, _ = jax.jit(sac.update)(state, batch, jax.random.PRNGKey(0))
    tau = state.config.tau
    for online_p, old_target, new_target in zip(jax.tree.leaves(new.critic),
                                                 jax.tree.leaves(state.target_critic),
                                                 jax.tree.leaves(new.target_critic), strict=True):
        expected = tau * np.asarray(online_p) + (1 - tau) * np.asarray(old_target)
        np.testing.assert_allclose(np.asarray(new_target), expected, rtol=1e-6, atol=1e-7)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="num_target_critics"):
        sac.init(jax.random.PRNGKey(0), SPEC, sac.Config(num_critics=2, num_target_critics=3))
    with pytest.raises(ValueError, match="actor_q"):
        sac.init(jax.random.PRNGKey(0), SPEC, sac.Config(actor_q="max"))
