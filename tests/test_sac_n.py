"""SAC-N (and the LB-SAC preset) against an independent float64 numpy reference written from the
paper's equations: the soft target is the minimum over ALL N target critics, the actor uses the
minimum over N; the critic-loss gradient is backpropagated by hand through the ReLU layers."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec, apply_overrides
from offbench.networks import tanh_gaussian_log_prob
from offbench_baselines import sac, sac_n

from np_reference import (
    as_np,
    fixed_batch,
    get,
    np_actor,
    np_critics,
    np_critics_shared_layer_norm,
    np_sample,
    perturbed,
)

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99
N = 5
K_CRITIC, K_ACTOR = jax.random.PRNGKey(3), jax.random.PRNGKey(5)


@functools.cache
def make_state():
    # Flax's default initialization (edac_init=False), and target critics whose outputs are
    # scaled up: the N critics disagree by O(1), so the min over all N differs clearly from a
    # min over fewer of them or their mean.
    cfg = sac_n.Config(hidden=(16, 16), num_critics=N, init_temperature=0.3, edac_init=False)
    state = sac_n.init(jax.random.PRNGKey(1), SPEC, cfg)
    target = sac_n.init(jax.random.PRNGKey(2), SPEC, cfg).critic  # a distinct target critic
    target = jax.tree_util.tree_map_with_path(
        lambda path, x: 5 * x if "Dense_2" in jax.tree_util.keystr(path) else x, target)
    return state.replace(target_critic=target)


@functools.cache
def implementation():
    """The implementation's losses and critic gradients, computed in float64 (x64), one compile:
    (state, batch, critic loss, its info, its gradients, actor loss, actor info)."""
    state, batch = make_state(), fixed_batch()
    with jax.enable_x64(True):
        to64 = functools.partial(jax.tree.map, lambda x: jnp.asarray(x, jnp.float64))
        state = state.replace(actor=to64(state.actor), critic=to64(state.critic),
                              target_critic=to64(state.target_critic),
                              log_alpha=to64(state.log_alpha))
        batch = to64(batch)

        @jax.jit
        def run(state, batch):
            (loss, info), grads = jax.value_and_grad(sac.critic_loss, has_aux=True)(
                state.critic, state, batch, K_CRITIC)
            actor_loss, actor_info = sac.actor_loss(state.actor, state, batch, K_ACTOR)
            return loss, info, grads, actor_loss, actor_info

        return state, batch, *jax.device_get(run(state, batch))


def draws(key, shape):
    """The standard-normal draws the implementation makes (inputs, not computations)."""
    with jax.enable_x64(True):
        return np.asarray(jax.random.normal(key, shape, jnp.float64))


def np_target(state, b, reduce=lambda q: q.min(0)):
    """y = r + gamma (1 - d) (min_{i=1..N} Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s')."""
    noise = draws(jax.random.split(K_CRITIC)[0], (64, SPEC.action_size))
    next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)
    next_v = reduce(np_critics(state.target_critic, b.next_obs, next_a))
    alpha = np.exp(np.float64(state.log_alpha))
    return b.reward + GAMMA * (1.0 - b.terminal) * (next_v - alpha * next_logp)


def np_critic_loss(state, b, reduce=lambda q: q.min(0)):
    """0.5 * sum_i mean_b (Q_i(s, a) - y)^2."""
    q = np_critics(state.critic, b.obs, b.action)
    return 0.5 * np.sum(np.mean((q - np_target(state, b, reduce)) ** 2, axis=1))


def test_defaults_and_translation_to_sac():
    cfg = sac_n.Config()
    assert sac_n.MODES == ("offline", "o2o")
    assert (cfg.hidden, cfg.num_critics, cfg.batch_size) == ((256, 256, 256), 10, 256)
    assert (cfg.actor_lr, cfg.critic_lr, cfg.temperature_lr) == (3e-4, 3e-4, 3e-4)
    assert (cfg.discount, cfg.tau, cfg.init_temperature) == (0.99, 5e-3, 1.0)
    assert cfg.backup_entropy and cfg.edac_init and not cfg.normalize_obs
    cfg7 = sac_n.Config(hidden=(16,), num_critics=7)
    init = functools.partial(sac_n.init, spec=SPEC, config=cfg7)
    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    assert isinstance(state.config, sac.Config)
    assert (state.config.num_critics, state.config.num_target_critics) == (7, 7)
    assert state.config.actor_q == "min" and state.config.hidden == (16,)
    assert jax.tree.leaves(state.critic)[0].shape[0] == 7  # one vmapped ensemble of 7
    # LB-SAC is a preset of the same Config, reachable with the documented --set flags
    flags = ["batch_size=10000", "actor_lr=0.0018", "critic_lr=0.0018", "temperature_lr=0.0018",
             "edac_init=false", "num_critics=10", "critic_layer_norm_shared=true"]
    assert apply_overrides(sac_n.Config(), flags) == sac_n.LB_SAC
    # LB-SAC's LayerNorm (hopper-medium) is one for all N critics; SAC-N's option, one per critic
    with_ln = dataclasses.replace(sac_n.LB_SAC, critic_layer_norm=True)
    assert sac_n.sac_config(with_ln).critic_layer_norm == "shared"
    assert sac_n.sac_config(sac_n.Config(critic_layer_norm=True)).critic_layer_norm is True
    assert sac_n.sac_config(sac_n.LB_SAC).critic_layer_norm is False


def test_critic_target_is_min_over_all_n():
    state, batch, loss, info, *_ = implementation()
    b = as_np(batch)
    expected = np_critic_loss(state, b)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(info["target_mean"], np_target(state, b).mean(), rtol=1e-5)
    # the test can tell: a min over fewer of the critics, or their mean, gives other targets,
    # and losses 100x the tolerance away
    wrong = {"min of 2": lambda q: q[:2].min(0), "min of 3": lambda q: q[2:].min(0),
             "mean": lambda q: q.mean(0)}
    for name, reduce in wrong.items():
        assert np.abs(np_target(state, b, reduce) - np_target(state, b)).max() > 0.1, name
        assert abs(np_critic_loss(state, b, reduce) - expected) > 1e-3 * expected, name


def test_actor_loss_uses_min_over_all_n():
    state, batch, *_, actor_loss, actor_info = implementation()
    b = as_np(batch)
    a, logp = np_sample(*np_actor(state.actor, b.obs), draws(K_ACTOR, (64, SPEC.action_size)))
    q = np_critics(state.critic, b.obs, a)
    alpha = np.exp(np.float64(state.log_alpha))
    np.testing.assert_allclose(actor_loss, np.mean(alpha * logp - q.min(0)), rtol=1e-5)
    np.testing.assert_allclose(actor_info["entropy"], -logp.mean(), rtol=1e-5)
    assert abs(np.mean(alpha * logp - q.mean(0)) - actor_loss) > 1e-2 * abs(actor_loss)


def np_critic_loss_grads(params, b, target):
    """d/dparams of 0.5 * sum_i mean_b (Q_i(s, a) - y)^2, backpropagated by hand per critic."""
    p = params["params"]["VmapCritic_0"]["MLP_0"]
    names = sorted(p, key=lambda name: int(name.split("_")[1]))
    x = np.concatenate([b.obs, b.action], axis=-1)
    grads = {name: {"kernel": np.zeros(p[name]["kernel"].shape),
                    "bias": np.zeros(p[name]["bias"].shape)} for name in names}
    for i in range(p[names[0]]["kernel"].shape[0]):
        weights = [(np.asarray(p[n]["kernel"][i], np.float64),
                    np.asarray(p[n]["bias"][i], np.float64)) for n in names]
        inputs, pre = [x], []
        for k, (w, c) in enumerate(weights):
            z = inputs[-1] @ w + c
            pre.append(z)
            if k < len(weights) - 1:
                inputs.append(np.maximum(z, 0.0))
        dz = (pre[-1][:, 0] - target)[:, None] / len(target)  # d loss / d Q_i
        for k in reversed(range(len(weights))):
            grads[names[k]]["kernel"][i] = inputs[k].T @ dz
            grads[names[k]]["bias"][i] = dz.sum(0)
            if k:
                dz = (dz @ weights[k][0].T) * (pre[k - 1] > 0)
    return {"params": {"VmapCritic_0": {"MLP_0": grads}}}


def test_critic_loss_gradient_matches_hand_backprop():
    """Every critic parameter's gradient (no gradient flows through the target)."""
    state, batch, _, _, grads, *_ = implementation()
    b = as_np(batch)
    expected = np_critic_loss_grads(state.critic, b, np_target(state, b))
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_layer_norm_critics_match_reference():
    """LB-SAC's hopper-medium setting, critic_layer_norm=True: each critic normalizes every hidden
    layer (LayerNorm before the ReLU); the loss and a first-layer weight's gradient match the
    reference, which applies the LayerNorm by hand."""
    cfg = sac_n.Config(hidden=(16, 16), num_critics=N, init_temperature=0.3, edac_init=False,
                       critic_layer_norm=True)
    state = sac_n.init(jax.random.PRNGKey(1), SPEC, cfg)
    state = state.replace(target_critic=sac_n.init(jax.random.PRNGKey(2), SPEC, cfg).critic)
    assert "LayerNorm_1" in state.critic["params"]["VmapCritic_0"]["MLP_0"]
    state = state.replace(critic=jax.tree_util.tree_map_with_path(  # LayerNorm off its identity
        lambda path, x: x * 1.5 + 0.1 if "LayerNorm" in jax.tree_util.keystr(path) else x,
        state.critic))
    batch, b = fixed_batch(), as_np(fixed_batch())
    (loss, _), grads = jax.value_and_grad(sac.critic_loss, has_aux=True)(
        state.critic, state, batch, K_CRITIC)
    noise = np.asarray(jax.random.normal(jax.random.split(K_CRITIC)[0], (64, 3)), np.float64)
    next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)
    target = b.reward + GAMMA * (1.0 - b.terminal) * (
        np_critics(state.target_critic, b.next_obs, next_a).min(0)
        - np.exp(np.float64(state.log_alpha)) * next_logp)

    def np_loss(critic):
        q = np_critics(critic, b.obs, b.action)
        return 0.5 * np.sum(np.mean((q - target) ** 2, axis=1))

    np.testing.assert_allclose(float(loss), np_loss(state.critic), rtol=1e-5)
    path, index, eps = ("params", "VmapCritic_0", "MLP_0", "Dense_0", "kernel"), (2, 3, 4), 1e-5
    numeric = (np_loss(perturbed(state.critic, path, index, eps))
               - np_loss(perturbed(state.critic, path, index, -eps))) / (2 * eps)
    np.testing.assert_allclose(float(get(grads, path)[index]), numeric, rtol=1e-5)
    # the LayerNorm matters: the same weights without it give another loss
    plain = {"params": {"VmapCritic_0": {"MLP_0": {
        k: v for k, v in state.critic["params"]["VmapCritic_0"]["MLP_0"].items()
        if k.startswith("Dense")}}}}
    assert abs(np_loss(plain) - np_loss(state.critic)) > 1e-2 * np_loss(state.critic)


def test_lb_sac_layer_norm_is_shared_by_all_critics():
    """LB-SAC with critic LayerNorm (hopper-medium), as CORL's lb_sac.py: one nn.LayerNorm(width)
    per hidden layer applied to all N critics' activations (each normalized on its own, ONE scale
    and bias, PyTorch's epsilon 1e-5). Loss, the shared parameters' gradient (summed over the
    critics that use them) and one update's Adam step on them, against the numpy reference."""
    cfg = dataclasses.replace(sac_n.LB_SAC, hidden=(16, 16), num_critics=N, init_temperature=0.3,
                              critic_layer_norm=True)
    state = sac_n.init(jax.random.PRNGKey(1), SPEC, cfg)
    params = state.critic["params"]
    assert params["LayerNorm_0"]["scale"].shape == (16,)  # one for all N, not (N, 16)
    assert not [k for k in params["VmapCritic_0"]["MLP_0"] if k.startswith("LayerNorm")]
    rng = np.random.default_rng(0)

    def prepare(critic):
        """LayerNorm off its identity; a first layer small enough that its pre-activations'
        variance (~1e-4) makes the epsilon matter."""
        p = critic["params"]
        mlp = p["VmapCritic_0"]["MLP_0"]
        norms = {f"LayerNorm_{k}": {"scale": jnp.asarray(1 + 0.5 * rng.normal(size=16),
                                                         jnp.float32),
                                    "bias": jnp.asarray(0.1 * rng.normal(size=16), jnp.float32)}
                 for k in range(2)}
        dense0 = {**mlp["Dense_0"], "kernel": mlp["Dense_0"]["kernel"] * 0.01}
        return {"params": {**p, **norms,
                           "VmapCritic_0": {"MLP_0": {**mlp, "Dense_0": dense0}}}}

    target = prepare(sac_n.init(jax.random.PRNGKey(2), SPEC, cfg).critic)
    state = state.replace(critic=prepare(state.critic), target_critic=target)
    critic_tx = sac.optimizers(state.config)[1]
    state = state.replace(critic_opt=critic_tx.init(state.critic))
    key = jax.random.PRNGKey(7)
    k_critic = jax.random.split(key)[0]  # sac.update's key for the critic step
    batch, b = fixed_batch(), as_np(fixed_batch())
    (loss, _), grads = jax.value_and_grad(sac.critic_loss, has_aux=True)(
        state.critic, state, batch, k_critic)

    noise = np.asarray(jax.random.normal(jax.random.split(k_critic)[0], (64, 3)), np.float64)
    next_a, next_logp = np_sample(*np_actor(state.actor, b.next_obs), noise)

    def np_loss(critic, target=state.target_critic, eps=1e-5):
        y = b.reward + GAMMA * (1.0 - b.terminal) * (
            np_critics_shared_layer_norm(target, b.next_obs, next_a, eps).min(0)
            - np.exp(np.float64(state.log_alpha)) * next_logp)
        q = np_critics_shared_layer_norm(critic, b.obs, b.action, eps)
        return 0.5 * np.sum(np.mean((q - y) ** 2, axis=1))

    expected = np_loss(state.critic)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # the test can tell Flax's epsilon from PyTorch's
    flax_eps = np_loss(state.critic, eps=1e-6)
    assert abs(flax_eps - expected) > 1e-3 * expected
    new, _ = jax.jit(sac_n.update)(state, batch, key)
    h = 1e-5
    for path in (("params", "LayerNorm_0", "scale"), ("params", "LayerNorm_1", "bias")):
        numeric = np.array([(np_loss(perturbed(state.critic, path, j, h))
                             - np_loss(perturbed(state.critic, path, j, -h))) / (2 * h)
                            for j in range(16)])
        np.testing.assert_allclose(np.asarray(get(grads, path)), numeric, rtol=2e-4,
                                   atol=1e-6 * np.abs(numeric).max())
        # Adam's first step moves every shared entry by lr * g / (|g| + 1e-8), once for all N
        step = np.asarray(get(new.critic, path)) - np.asarray(get(state.critic, path))
        np.testing.assert_allclose(step, -cfg.critic_lr * numeric / (np.abs(numeric) + 1e-8),
                                   rtol=1e-3, atol=1e-9)


def test_tanh_log_prob_is_exact_where_tanh_saturates():
    """The Jacobian term is the exact log(1 - tanh(u)^2) = -2 log cosh(u), also at |u| = 9 where
    CORL's log(1 - tanh(u)^2 + 1e-6) stops near log 1e-6; the module declares the difference."""
    u = np.array([[0.5, -4.0, 9.0]])
    got = float(tanh_gaussian_log_prob(jnp.asarray(u, jnp.float32), jnp.zeros((1, 3)),
                                       jnp.asarray(u, jnp.float32))[0])
    by_hand = np.sum(-0.5 * np.log(2 * np.pi) + 2 * np.log(np.cosh(u)))
    np.testing.assert_allclose(got, by_hand, rtol=1e-6)
    corl = np.sum(-0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(u) ** 2 + 1e-6))
    assert by_hand - corl > 1.0
    assert "log(1 - tanh(u)^2 + 1e-6)" in sac_n.__doc__


def test_edac_initialization():
    cfg = sac_n.Config(hidden=(16, 16), num_critics=N, init_temperature=0.3)
    state = sac_n.init(jax.random.PRNGKey(1), SPEC, cfg)
    critic = state.critic["params"]["VmapCritic_0"]["MLP_0"]
    actor = state.actor["params"]["MLP_0"]
    for mlp, bound in ((critic, 3e-3), (actor, 1e-3)):
        for name in ("Dense_0", "Dense_1"):
            np.testing.assert_array_equal(np.asarray(mlp[name]["bias"]), np.float32(0.1))
        for leaf in mlp["Dense_2"].values():
            assert np.abs(np.asarray(leaf)).max() <= bound and np.asarray(leaf).std() > 0
    kernels = np.asarray(critic["Dense_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])  # the members still differ
    for a, b in zip(jax.tree.leaves(state.critic), jax.tree.leaves(state.target_critic),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the target starts equal
    # without it (as in LB-SAC): Flax's defaults, zero biases
    plain = implementation()[0].critic["params"]["VmapCritic_0"]["MLP_0"]
    np.testing.assert_array_equal(np.asarray(plain["Dense_0"]["bias"]), 0.0)


def test_update_metrics_are_scalars():
    _, metrics = jax.eval_shape(sac_n.update, make_state(), fixed_batch(), jax.random.PRNGKey(0))
    assert metrics and all(m.shape == () for m in metrics.values())


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="num_critics"):
        sac_n.init(jax.random.PRNGKey(0), SPEC, sac_n.Config(hidden=(16,), num_critics=0))
