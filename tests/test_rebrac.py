"""ReBRAC against an independent float64 numpy reference written from the paper's equations
(LayerNorm networks written out by hand here: np_reference.py's MLPs have none)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import rebrac, td3_bc

from np_reference import as_np, fixed_batch, get, perturbed

SPEC = EnvSpec(observation_size=5, action_size=3)
N = 64  # fixed_batch's size
LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon

init = jax.jit(rebrac.init, static_argnums=(1, 2))
critic_loss = jax.jit(rebrac.critic_loss)
actor_loss = jax.jit(rebrac.actor_loss)
critic_grad = jax.jit(jax.grad(lambda *args: rebrac.critic_loss(*args)[0]))
actor_grad = jax.jit(jax.grad(lambda *args: rebrac.actor_loss(*args)[0]))


def np_mlp_ln(params, x):
    """Dense -> [LayerNorm] -> ReLU hidden layers, then a linear output layer."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    dense = sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    for i, name in enumerate(dense):
        x = x @ f64(params[name]["kernel"]) + f64(params[name]["bias"])
        if i < len(dense) - 1:
            if f"LayerNorm_{i}" in params:
                ln = params[f"LayerNorm_{i}"]
                mean = x.mean(-1, keepdims=True)
                var = ((x - mean) ** 2).mean(-1, keepdims=True)
                x = (x - mean) / np.sqrt(var + LN_EPS) * f64(ln["scale"]) + f64(ln["bias"])
            x = np.maximum(x, 0.0)
    return x


def np_policy(params, obs):
    return np.tanh(np_mlp_ln(params["params"], obs))


def np_critics(params, obs, action):
    p = params["params"]["VmapCritic_0"]["MLP_0"]
    x = np.concatenate([obs, action], axis=-1)
    return np.stack([np_mlp_ln(jax.tree.map(lambda a, i=i: np.asarray(a)[i], p), x)[..., 0]
                     for i in range(p["Dense_0"]["kernel"].shape[0])])


def rebrac_batch():
    batch = fixed_batch()
    rng = np.random.default_rng(1)
    next_actions = np.tanh(rng.normal(size=(N, SPEC.action_size)))
    return batch.replace(extra={"next_actions": jnp.asarray(next_actions, jnp.float32)})


def perturb_layer(params, path, factor):
    params = jax.tree.map(lambda x: x, params)
    leaf = params
    for k in path[:-1]:
        leaf = leaf[k]
    leaf[path[-1]] = jax.tree.map(lambda x: x * factor, leaf[path[-1]])
    return params


@functools.cache
def base_state(actor_layer_norm):
    cfg = rebrac.Config(hidden=(16, 16, 16), actor_layer_norm=actor_layer_norm)
    state = init(jax.random.PRNGKey(1), SPEC, cfg)
    other = init(jax.random.PRNGKey(2), SPEC, cfg)
    # distinct targets; a large last actor layer, so that the target action saturates and clips
    target_actor = perturb_layer(other.actor, ("params", "Dense_3"), 30.0)
    # LayerNorm scales and biases away from their (1, 0) initial values, so the test sees them
    critic = jax.tree.map(lambda x: x, state.critic)
    ln = critic["params"]["VmapCritic_0"]["MLP_0"]["LayerNorm_1"]
    ln["scale"] = ln["scale"] * 1.7 - 0.2
    ln["bias"] = ln["bias"] + 0.3
    return state.replace(critic=critic, target_actor=target_actor, target_critic=other.critic)


def make_state(actor_layer_norm=False, **kw):
    state = base_state(actor_layer_norm)
    return state.replace(config=dataclasses.replace(state.config, **kw))


def np_target(state, b, key):
    """y = r + gamma (1 - d) (min_i Q'_i(s', a') - beta_2 ||a' - a'_data||^2)."""
    cfg = state.config
    z = np.asarray(jax.random.normal(key, (N, SPEC.action_size)), np.float64)  # the same draws
    smoothing = np.clip(cfg.policy_noise * z, -cfg.noise_clip, cfg.noise_clip)
    next_a = np.clip(np_policy(state.target_actor, b.next_obs) + smoothing, -1.0, 1.0)
    penalty = np.sum((next_a - b.extra["next_actions"]) ** 2, axis=-1)
    next_v = np_critics(state.target_critic, b.next_obs, next_a).min(0)
    return b.reward + cfg.discount * (1 - b.terminal) * (next_v - cfg.critic_bc_coef * penalty), \
        penalty


def np_critic_loss(critic_params, target, b):
    q = np_critics(critic_params, b.obs, b.action)
    return np.sum(np.mean((q - target) ** 2, axis=1)), q


def np_actor_loss(actor_params, state, b, lmbda=None):
    """mean(beta_1 ||pi(s) - a||^2 - lambda min_i Q_i(s, pi(s))), lambda = 1 / mean |min Q|."""
    cfg = state.config
    a = np_policy(actor_params, b.obs)
    q = np_critics(state.critic, b.obs, a).min(0)
    if lmbda is None:
        lmbda = 1.0 / np.abs(q).mean() if cfg.normalize_q else 1.0
    penalty = np.sum((a - b.action) ** 2, axis=-1)
    return np.mean(cfg.actor_bc_coef * penalty - lmbda * q), lmbda, penalty




@pytest.mark.parametrize("critic_bc_coef", [0.01, 0.5])
def test_critic_loss_matches_reference(critic_bc_coef):
    state, batch = make_state(critic_bc_coef=critic_bc_coef), rebrac_batch()
    key = jax.random.PRNGKey(3)
    loss, info = critic_loss(state.critic, state, batch, key)
    b = as_np(batch)
    target, penalty = np_target(state, b, key)
    expected, q = np_critic_loss(state.critic, target, b)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["critic_bc_penalty"]), penalty.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(info["q_mean"]), q.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["target_mean"]), target.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize_q,actor_layer_norm", [(True, False), (False, True)])
def test_actor_loss_matches_reference(normalize_q, actor_layer_norm):
    state = make_state(actor_layer_norm, normalize_q=normalize_q, actor_bc_coef=0.3)
    batch = rebrac_batch()
    loss, info = actor_loss(state.actor, state, batch)
    expected, lmbda, penalty = np_actor_loss(state.actor, state, as_np(batch))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["lambda"]), lmbda, rtol=1e-5)
    np.testing.assert_allclose(float(info["actor_bc_penalty"]), penalty.mean(), rtol=1e-5)


@pytest.mark.parametrize("path,index", [
    (("params", "VmapCritic_0", "MLP_0", "Dense_1", "kernel"), (1, 2, 3)),
    (("params", "VmapCritic_0", "MLP_0", "LayerNorm_1", "scale"), (0, 5)),
])
def test_critic_gradient_matches_finite_differences(path, index):
    """jax.grad vs a central difference of the reference (target held fixed), through a
    LayerNorm'd layer and a LayerNorm scale."""
    state, batch, key = make_state(critic_bc_coef=0.5), rebrac_batch(), jax.random.PRNGKey(6)
    grads = critic_grad(state.critic, state, batch, key)
    b = as_np(batch)
    target, _ = np_target(state, b, key)
    eps = 1e-5
    loss_at = lambda d: np_critic_loss(perturbed(state.critic, path, index, d), target, b)[0]
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(get(grads, path)[index]), numeric, rtol=1e-5, atol=1e-6)


def test_actor_gradient_treats_lambda_as_a_constant():
    state, batch = make_state(actor_bc_coef=0.3), rebrac_batch()
    grads = actor_grad(state.actor, state, batch)
    b = as_np(batch)
    _, lmbda, _ = np_actor_loss(state.actor, state, b)
    path, index, eps = ("params", "Dense_1", "kernel"), (2, 7), 1e-5
    g = float(get(grads, path)[index])

    def numeric(fixed):
        def f(delta):
            return np_actor_loss(perturbed(state.actor, path, index, delta), state, b,
                                 lmbda if fixed else None)[0]
        return (f(eps) - f(-eps)) / (2 * eps)

    np.testing.assert_allclose(g, numeric(fixed=True), rtol=1e-5, atol=1e-6)
    assert abs(g - numeric(fixed=False)) > 1e-2 * abs(g)


def test_actor_loss_is_td3_bc_s_over_alpha():
    """With identical critics (min = Q_1), beta_1 = 1 / (alpha |A|) and normalize_q, ReBRAC's
    actor loss is TD3+BC's divided by alpha: the two modules agree where the papers do."""
    alpha = 2.5
    state = make_state(actor_bc_coef=1.0 / (alpha * SPEC.action_size))
    twin = jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), state.critic)
    state = state.replace(critic=twin)
    ours = float(actor_loss(state.actor, state, rebrac_batch())[0])
    td3_config = td3_bc.Config(hidden=state.config.hidden, alpha=alpha, critic_layer_norm=True)
    td3_state = state.replace(config=td3_config)
    theirs = float(jax.jit(td3_bc.actor_loss)(state.actor, td3_state, rebrac_batch())[0])
    np.testing.assert_allclose(ours, theirs / alpha, rtol=1e-5)


def test_missing_next_actions_is_a_clear_error():
    with pytest.raises(ValueError, match="next_actions"):
        rebrac.critic_loss(make_state().critic, make_state(), fixed_batch(), jax.random.PRNGKey(0))


def test_learns_vmapped_over_seeds():
    """Two seeds vmapped in one program, all transitions terminal with reward 1: every Q must
    converge to 1; with a strong actor penalty the policy must approach the dataset's actions."""
    cfg = rebrac.Config(hidden=(32, 32), actor_bc_coef=30.0, batch_size=N, policy_freq=1)
    batch = rebrac_batch().replace(reward=jnp.ones(N), terminal=jnp.ones(N))

    @jax.jit
    @jax.vmap
    def train(key):
        state = rebrac.init(key, SPEC, cfg)
        body = lambda s, k: rebrac.update(s, batch, k)  # noqa: E731
        state, metrics = jax.lax.scan(body, state, jax.random.split(key, 400))
        q = td3_bc.critics(state.critic, state, batch.obs, batch.action)
        return q, metrics

    q, metrics = train(jax.random.split(jax.random.PRNGKey(0), 2))
    assert all(v.shape == (2, 400) for v in metrics.values())
    assert np.abs(np.asarray(q) - 1.0).mean(axis=(1, 2)).max() < 0.05  # from |Q| ~ 0.1 at init
    bc = np.asarray(metrics["actor_bc_penalty"])
    assert np.all(bc[:, -1] < 0.1 * bc[:, 0]), bc[:, [0, -1]]


def test_published_defaults():
    cfg = rebrac.Config()
    assert (cfg.actor_lr, cfg.critic_lr, cfg.hidden, cfg.batch_size) == (1e-3, 1e-3,
                                                                        (256, 256, 256), 1024)
    assert (cfg.discount, cfg.tau, cfg.policy_noise, cfg.noise_clip, cfg.policy_freq) == (
        0.99, 5e-3, 0.2, 0.5, 2)
    assert cfg.critic_layer_norm and not cfg.actor_layer_norm and cfg.normalize_q
    assert not cfg.normalize_obs  # ReBRAC's configs: normalize_states false
    assert rebrac.DATASET_FIELDS == ("next_actions",) and set(rebrac.MODES) == {"offline", "o2o"}


online_update = jax.jit(functools.partial(rebrac.online_update, online_start=100, online_updates=8))
offline_update = jax.jit(rebrac.update)


@pytest.mark.parametrize("online_index, decay", [(0, 1.0), (2, 0.75), (4, 0.5), (40, 0.5)])
def test_fine_tuning_drops_the_critic_penalty_and_decays_the_actors(online_index, decay):
    # CORL's finetune/rebrac.py: online, beta_2 = 0 and beta_1 * max(0.5, 1 - t / online
    # updates); here 8 online updates, so t = 2 is a quarter of the way and t >= 4 at the floor
    state = make_state(critic_bc_coef=0.5, actor_bc_coef=0.3)
    state = state.replace(steps=jnp.asarray(100 + online_index, state.steps.dtype))
    batch, key = rebrac_batch(), jax.random.PRNGKey(5)
    new, info = online_update(state, batch, key)
    b = as_np(batch)
    target, _ = np_target(make_state(critic_bc_coef=0.0), b, key)  # no critic penalty
    expected_critic, _ = np_critic_loss(state.critic, target, b)
    np.testing.assert_allclose(float(info["critic_loss"]), expected_critic, rtol=1e-5)
    np.testing.assert_allclose(float(info["actor_bc_coef"]), 0.3 * decay, rtol=1e-6)
    # the actor's loss, on the critic after this update's critic step, with the decayed beta_1
    after_critic = state.replace(critic=new.critic,
                                 config=dataclasses.replace(state.config,
                                                            actor_bc_coef=0.3 * decay))
    expected_actor, _, _ = np_actor_loss(state.actor, after_critic, b)
    np.testing.assert_allclose(float(info["actor_loss"]), expected_actor, rtol=1e-5)
    # offline, the same update keeps both penalties at their configured values
    _, offline_info = offline_update(state, batch, key)
    assert not np.isclose(float(offline_info["critic_loss"]), expected_critic, rtol=1e-5)
