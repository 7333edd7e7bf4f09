"""TD3+BC against an independent float64 numpy reference written from the paper's equations."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import td3_bc

from np_reference import as_np, fixed_batch, get, np_critics, np_mlp, perturbed

SPEC = EnvSpec(observation_size=5, action_size=3)
N = 64  # fixed_batch's size
KERNEL = ("params", "Dense_1", "kernel")  # an actor weight matrix, for gradient checks

# jitted once per test module: one compilation (persistently cached) instead of many eager ops
init = jax.jit(td3_bc.init, static_argnums=(1, 2))
critic_loss = jax.jit(td3_bc.critic_loss)
actor_loss = jax.jit(td3_bc.actor_loss)
critic_grad = jax.jit(jax.grad(lambda *args: td3_bc.critic_loss(*args)[0]))
actor_grad = jax.jit(jax.grad(lambda *args: td3_bc.actor_loss(*args)[0]))


def np_policy(params, obs):
    return np.tanh(np_mlp(params["params"], obs))


def scale_layer(params, layer, factor):
    """A copy of MLP params with one Dense layer multiplied by `factor`."""
    params = jax.tree.map(lambda x: x, params)
    params["params"][layer] = jax.tree.map(lambda x: x * factor, params["params"][layer])
    return params


@functools.cache
def base_state():
    cfg = td3_bc.Config(hidden=(16, 16))
    state = init(jax.random.PRNGKey(1), SPEC, cfg)
    other = init(jax.random.PRNGKey(2), SPEC, cfg)
    # Targets distinct from the online networks, so the test sees which one each term uses; a
    # saturated target actor (|tanh| ~ 1), so that the smoothed target action hits its [-1, 1] clip.
    return state.replace(target_actor=scale_layer(other.actor, "Dense_2", 30.0),
                         target_critic=other.critic)


def make_state(**kw):
    state = base_state()
    return state.replace(config=dataclasses.replace(state.config, **kw))


def np_target(state, b, key):
    """y = r + gamma (1 - d) min_i Q'_i(s', clip(pi'(s') + clip(sigma z, -c, c), -1, 1))."""
    cfg = state.config
    z = np.asarray(jax.random.normal(key, (N, SPEC.action_size)), np.float64)  # the same draws
    smoothing = np.clip(cfg.policy_noise * z, -cfg.noise_clip, cfg.noise_clip)
    unclipped = np_policy(state.target_actor, b.next_obs) + smoothing
    next_a = np.clip(unclipped, -1.0, 1.0)
    next_v = np_critics(state.target_critic, b.next_obs, next_a).min(0)
    return b.reward + cfg.discount * (1 - b.terminal) * next_v, z, unclipped


def np_critic_loss(critic_params, target, b):
    q = np_critics(critic_params, b.obs, b.action)
    return np.sum(np.mean((q - target) ** 2, axis=1)), q


def np_actor_loss(actor_params, state, b, lmbda=None):
    """-lambda mean Q_1(s, pi(s)) + mean (pi(s) - a)^2; lambda = alpha / mean |Q_1| unless given."""
    a = np_policy(actor_params, b.obs)
    q1 = np_critics(state.critic, b.obs, a)[0]
    if lmbda is None:
        lmbda = state.config.alpha / np.abs(q1).mean()
    return -lmbda * q1.mean() + np.mean((a - b.action) ** 2), lmbda, q1




@pytest.mark.parametrize("policy_noise,noise_clip", [(0.2, 0.5), (0.6, 0.3)])
def test_critic_loss_matches_reference(policy_noise, noise_clip):
    state = make_state(policy_noise=policy_noise, noise_clip=noise_clip)
    batch, key = fixed_batch(), jax.random.PRNGKey(3)
    loss, info = critic_loss(state.critic, state, batch, key)
    b = as_np(batch)
    target, z, unclipped = np_target(state, b, key)
    # both clips are exercised by these draws (else the test could not see them)
    assert np.any(np.abs(policy_noise * z) > noise_clip) and np.any(np.abs(unclipped) > 1.0)
    expected, q = np_critic_loss(state.critic, target, b)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["q_mean"]), q.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["target_mean"]), target.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [2.5, 0.4])
def test_actor_loss_matches_reference(alpha):
    state, batch = make_state(alpha=alpha), fixed_batch()
    loss, info = actor_loss(state.actor, state, batch)
    expected, lmbda, q1 = np_actor_loss(state.actor, state, as_np(batch))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["lambda"]), lmbda, rtol=1e-5)
    np.testing.assert_allclose(float(info["q_policy"]), q1.mean(), rtol=1e-5, atol=1e-6)


def test_critic_gradient_matches_finite_differences():
    """d(critic loss)/d(a weight of the SECOND critic): jax.grad vs a central difference of the
    reference, the target held fixed (a semi-gradient)."""
    state, batch, key = make_state(), fixed_batch(), jax.random.PRNGKey(6)
    grads = critic_grad(state.critic, state, batch, key)
    path = ("params", "VmapCritic_0", "MLP_0", "Dense_1", "kernel")
    index = (1, 2, 3)
    b = as_np(batch)
    target, _, _ = np_target(state, b, key)
    eps = 1e-5
    loss_at = lambda d: np_critic_loss(perturbed(state.critic, path, index, d), target, b)[0]
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(get(grads, path)[index]), numeric, rtol=1e-5, atol=1e-6)


def test_actor_gradient_treats_lambda_as_a_constant():
    state, batch = make_state(), fixed_batch()
    grads = actor_grad(state.actor, state, batch)
    b = as_np(batch)
    _, lmbda, _ = np_actor_loss(state.actor, state, b)
    eps, g = 1e-5, float(get(grads, KERNEL)[2, 7])

    def numeric(fixed):
        def f(delta):
            return np_actor_loss(perturbed(state.actor, KERNEL, (2, 7), delta), state, b,
                                 lmbda if fixed else None)[0]
        return (f(eps) - f(-eps)) / (2 * eps)

    np.testing.assert_allclose(g, numeric(fixed=True), rtol=1e-5, atol=1e-6)
    # differentiating through lambda would give a visibly different gradient
    assert abs(g - numeric(fixed=False)) > 1e-2 * abs(g)


def test_delayed_actor_and_polyak_target_updates():
    """policy_freq=2: update 0 steps the critic, the actor and both targets (Polyak, towards the
    new parameters); update 1 steps only the critic."""
    state, batch = make_state(), fixed_batch()
    step = jax.jit(td3_bc.update)
    s1, metrics = step(state, batch, jax.random.PRNGKey(0))
    assert all(np.shape(v) == () and np.isfinite(float(v)) for v in metrics.values())
    tau = state.config.tau
    for online, old, new in ((s1.actor, state.target_actor, s1.target_actor),
                             (s1.critic, state.target_critic, s1.target_critic)):
        for o, t0, t1 in zip(jax.tree.leaves(online), jax.tree.leaves(old), jax.tree.leaves(new),
                             strict=True):
            np.testing.assert_allclose(np.asarray(t1), tau * np.asarray(o)
                                       + (1 - tau) * np.asarray(t0), rtol=1e-5, atol=1e-7)
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in  # noqa: E731
                               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    assert changed(s1.actor, state.actor) and changed(s1.critic, state.critic)

    s2, _ = step(s1, batch, jax.random.PRNGKey(1))
    assert changed(s2.critic, s1.critic)
    for name in ("actor", "actor_opt", "target_actor", "target_critic"):
        assert not changed(getattr(s2, name), getattr(s1, name)), name
    s3, _ = step(s2, batch, jax.random.PRNGKey(2))
    assert changed(s3.actor, s2.actor) and int(s3.steps) == 3


def test_learns_vmapped_over_seeds():
    """Two seeds vmapped in one program. With all transitions terminal and reward 1, every Q must
    converge to 1; with alpha=0 the actor is pure behaviour cloning and must fit the actions."""
    cfg = td3_bc.Config(hidden=(32, 32), alpha=0.0, actor_lr=3e-3, critic_lr=3e-3, policy_freq=1)
    batch = fixed_batch().replace(reward=jnp.ones(N), terminal=jnp.ones(N))

    @jax.jit
    @jax.vmap
    def train(key):
        state = td3_bc.init(key, SPEC, cfg)
        body = lambda s, k: td3_bc.update(s, batch, k)  # noqa: E731
        state, metrics = jax.lax.scan(body, state, jax.random.split(key, 600))
        q = td3_bc.critics(state.critic, state, batch.obs, batch.action)
        bc = jnp.mean((td3_bc.act(state, batch.obs, key, True) - batch.action) ** 2)
        return q, bc, metrics

    q, bc, metrics = train(jax.random.split(jax.random.PRNGKey(0), 2))
    assert metrics["critic_loss"].shape == (2, 600) and q.shape == (2, 2, N)
    assert np.abs(np.asarray(q) - 1.0).mean(axis=(1, 2)).max() < 0.05  # from |Q| ~ 0.1 at init
    assert np.all(np.asarray(bc) < 0.1 * np.asarray(metrics["bc_loss"][:, 0])), bc


def test_act():
    state, obs = make_state(expl_noise=0.5), fixed_batch().obs
    greedy = td3_bc.act(state, obs, jax.random.PRNGKey(0), True)
    np.testing.assert_allclose(np.asarray(greedy), np_policy(state.actor, as_np(obs)),
                               rtol=1e-5, atol=1e-6)
    key = jax.random.PRNGKey(7)
    noisy = np.asarray(td3_bc.act(state, obs, key, False))
    z = np.asarray(jax.random.normal(key, noisy.shape), np.float64)
    expected = np.clip(np_policy(state.actor, as_np(obs)) + 0.5 * z, -1, 1)
    np.testing.assert_allclose(noisy, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(noisy) <= 1.0) and np.any(np.abs(noisy) == 1.0)


def test_published_defaults():
    cfg = td3_bc.Config()
    assert (cfg.alpha, cfg.discount, cfg.tau, cfg.policy_noise, cfg.noise_clip,
            cfg.policy_freq) == (2.5, 0.99, 0.005, 0.2, 0.5, 2)
    assert (cfg.actor_lr, cfg.critic_lr, cfg.hidden, cfg.batch_size) == (3e-4, 3e-4, (256, 256),
                                                                        256)
    assert cfg.normalize_obs and not cfg.actor_layer_norm and not cfg.critic_layer_norm
    assert set(td3_bc.MODES) == {"offline", "o2o"}
    with pytest.raises(ValueError, match="policy_freq"):
        td3_bc.init(jax.random.PRNGKey(0), SPEC, dataclasses.replace(cfg, policy_freq=0))
