"""IQL against an independent float64 numpy reference written from the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import iql

from np_reference import as_np, fixed_batch, np_critics, np_mlp

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99
# A faster-learning config for the tests that run `update` (one compiled program for all).
FAST = dict(tau=0.05, actor_lr_schedule="constant", actor_lr=1e-3, critic_lr=1e-3,
            value_lr=1e-3)
# Compiled once each: far cheaper than op-by-op dispatch on a busy CPU.
UPDATE = jax.jit(iql.update)
VALUE_LOSS, CRITIC_LOSS, ACTOR_LOSS = map(jax.jit, (iql.value_loss, iql.critic_loss,
                                                    iql.actor_loss))
ACT = jax.jit(iql.act, static_argnums=3)
INIT = jax.jit(iql.init, static_argnums=(1, 2))


def grad_of(loss_fn):
    return jax.jit(jax.grad(lambda params, *args: loss_fn(params, *args)[0]))
LOG_STD = np.array([0.3, -0.7, 2.5])  # the last one above log_std_max = 2: clipped


def np_actor(params, obs, lo=-5.0, hi=2.0):
    """mean = tanh(MLP(s)); log-std a clipped state-independent vector."""
    p = params["params"]
    mean = np.tanh(np_mlp(p["MLP_0"], obs))
    return mean, np.broadcast_to(np.clip(np.asarray(p["log_std"], np.float64), lo, hi),
                                 mean.shape)


def np_log_normal(mean, log_std, a):
    var = np.exp(log_std) ** 2
    return np.sum(-0.5 * np.log(2 * np.pi * var) - (a - mean) ** 2 / (2 * var), axis=-1)


def np_value(params, obs):
    return np_mlp(params["params"], obs)[:, 0]


def np_expectile(u, tau):
    return np.mean(np.where(u > 0, tau, 1 - tau) * u ** 2)


def make_state(**kw):
    cfg = iql.Config(hidden=(16, 16), **kw)
    state = INIT(jax.random.PRNGKey(1), SPEC, cfg)
    other = INIT(jax.random.PRNGKey(2), SPEC, cfg)
    actor = {"params": {**state.actor["params"], "log_std": jnp.asarray(LOG_STD, jnp.float32)}}
    # distinct online and target critics, so the test sees which one each term uses
    return state.replace(target_critic=other.critic, actor=actor)


def test_expectile_loss_by_hand():
    diff = jnp.array([2.0, -1.0, 0.5, -3.0])  # target - prediction
    np.testing.assert_allclose(np.asarray(iql.expectile_loss(diff, 0.7)),
                               [0.7 * 4, 0.3 * 1, 0.7 * 0.25, 0.3 * 9], rtol=1e-6)
    np.testing.assert_allclose(float(jnp.mean(iql.expectile_loss(diff, 0.7))), 1.49375,
                               rtol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_is_minimized_at_the_expectile(tau):
    """The tau-expectile v solves tau * E[(x - v)+] = (1 - tau) * E[(v - x)+] (bisection here);
    the loss's gradient in v must vanish there, and v is above the mean for tau > 1/2."""
    x = np.random.default_rng(0).normal(size=200) ** 3
    lo, hi = x.min(), x.max()
    for _ in range(200):
        v = 0.5 * (lo + hi)
        excess = tau * np.maximum(x - v, 0).sum() - (1 - tau) * np.maximum(v - x, 0).sum()
        lo, hi = (v, hi) if excess > 0 else (lo, v)
    grad = jax.grad(lambda v: jnp.mean(iql.expectile_loss(jnp.asarray(x) - v, tau)))
    assert abs(float(grad(jnp.float32(v)))) < 1e-4
    assert abs(float(grad(jnp.float32(v + 0.05)))) > 1e-3  # ...and only there
    if tau == 0.5:
        np.testing.assert_allclose(v, x.mean(), rtol=1e-6)
    else:
        assert v > x.mean()


def test_value_loss_matches_reference():
    state, batch = make_state(), fixed_batch()
    loss, info = VALUE_LOSS(state.value, state, batch)
    b = as_np(batch)
    q = np_critics(state.target_critic, b.obs, b.action).min(0)  # the TARGET critics
    v = np_value(state.value, b.obs)
    np.testing.assert_allclose(float(loss), np_expectile(q - v, 0.7), rtol=1e-5)
    np.testing.assert_allclose(float(info["v_mean"]), v.mean(), rtol=1e-5, atol=1e-6)


def test_critic_loss_matches_reference():
    state, batch = make_state(), fixed_batch()
    loss, info = CRITIC_LOSS(state.critic, state, batch)
    b = as_np(batch)
    target = b.reward + GAMMA * (1 - b.terminal) * np_value(state.value, b.next_obs)
    q1, q2 = np_critics(state.critic, b.obs, b.action)
    expected = np.mean((q1 - target) ** 2) + np.mean((q2 - target) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["target_mean"]), target.mean(), rtol=1e-5, atol=1e-6)


def reference_weights(state, b, beta):
    adv = (np_critics(state.target_critic, b.obs, b.action).min(0)
           - np_value(state.value, b.obs))
    return np.minimum(np.exp(beta * adv), 100.0), adv


@pytest.mark.parametrize("beta", [3.0, 30.0])
def test_actor_loss_matches_reference(beta):
    state, batch = make_state(beta=beta), fixed_batch()
    loss, info = ACTOR_LOSS(state.actor, state, batch)
    b = as_np(batch)
    weights, adv = reference_weights(state, b, beta)
    if beta == 30.0:  # the clip at 100 is exercised
        assert 0 < np.sum(weights == 100.0) < len(weights)
    logp = np_log_normal(*np_actor(state.actor, b.obs), b.action)
    np.testing.assert_allclose(float(loss), -np.mean(weights * logp), rtol=1e-5)
    np.testing.assert_allclose(float(info["adv_mean"]), adv.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["weight_mean"]), weights.mean(), rtol=1e-5)


def jnp_actor_loss(params, weights, obs, action):
    """The AWR loss written out in plain jnp, for jax.grad."""
    p = params["params"]
    h = obs
    for i in range(3):
        h = h @ p["MLP_0"][f"Dense_{i}"]["kernel"] + p["MLP_0"][f"Dense_{i}"]["bias"]
        h = jax.nn.relu(h) if i < 2 else jnp.tanh(h)
    var = jnp.exp(2 * jnp.clip(p["log_std"], -5.0, 2.0))
    logp = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * var) - (action - h) ** 2 / (2 * var), axis=-1)
    return -jnp.mean(weights * logp)


def test_actor_gradient_matches_plain_reference():
    state, batch = make_state(beta=30.0), fixed_batch()
    grads = grad_of(iql.actor_loss)(state.actor, state, batch)
    weights, _ = reference_weights(state, as_np(batch), 30.0)
    expected = jax.jit(jax.grad(jnp_actor_loss))(state.actor, jnp.asarray(weights, jnp.float32),
                                        batch.obs, batch.action)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert float(grads["params"]["log_std"][2]) == 0.0  # clipped: no gradient
    assert abs(float(grads["params"]["log_std"][0])) > 1e-3


@pytest.mark.parametrize("which", ["value", "critic"])
def test_gradients_match_finite_differences(which):
    """d(loss)/d(one weight) from jax.grad vs a central difference on the float64 reference."""
    state, batch = make_state(), fixed_batch()
    b = as_np(batch)
    if which == "value":
        path = ("params", "Dense_1", "kernel")
        grads = grad_of(iql.value_loss)(state.value, state, batch)
        q = np_critics(state.target_critic, b.obs, b.action).min(0)

        def reference(params):
            return np_expectile(q - np_value(params, b.obs), 0.7)
    else:
        path = ("params", "VmapCritic_0", "MLP_0", "Dense_1", "kernel")
        grads = grad_of(iql.critic_loss)(state.critic, state, batch)
        target = b.reward + GAMMA * (1 - b.terminal) * np_value(state.value, b.next_obs)

        def reference(params):
            return np.sum(np.mean((np_critics(params, b.obs, b.action) - target) ** 2, axis=1))
    index = (1, 2, 3) if which == "critic" else (2, 3)
    g = grads
    for k in path:
        g = g[k]

    def loss_at(delta):
        params = jax.tree.map(lambda x: np.array(x, np.float64), getattr(state, which))
        leaf = params
        for k in path[:-1]:
            leaf = leaf[k]
        leaf[path[-1]][index] += delta
        return reference(params)

    eps = 1e-5
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(numeric) > 1e-4
    np.testing.assert_allclose(float(g[index]), numeric, rtol=1e-5, atol=1e-6)


def test_update_order_and_targets():
    """V is stepped first; the actor and Q steps use the NEW V; targets are a Polyak average."""
    state, batch = make_state(**FAST), fixed_batch()
    new, metrics = UPDATE(state, batch, jax.random.PRNGKey(0))
    after_v = state.replace(value=new.value)
    np.testing.assert_allclose(float(metrics["value_loss"]),
                               float(VALUE_LOSS(state.value, state, batch)[0]), rtol=1e-5)
    for name, loss_fn, params in (("critic_loss", CRITIC_LOSS, state.critic),
                                  ("actor_loss", ACTOR_LOSS, state.actor)):
        with_new_v = float(loss_fn(params, after_v, batch)[0])
        with_old_v = float(loss_fn(params, state, batch)[0])
        np.testing.assert_allclose(float(metrics[name]), with_new_v, rtol=1e-5)
        assert abs(with_new_v - with_old_v) > 1e-4 * abs(with_new_v)  # the test can tell
    assert all(np.ndim(v) == 0 and np.isfinite(float(v)) for v in metrics.values())
    tau = state.config.tau
    for online, old_target, new_target in zip(jax.tree.leaves(new.critic),
                                              jax.tree.leaves(state.target_critic),
                                              jax.tree.leaves(new.target_critic), strict=True):
        expected = tau * np.asarray(online) + (1 - tau) * np.asarray(old_target)
        np.testing.assert_allclose(np.asarray(new_target), expected, rtol=1e-6, atol=1e-7)


def test_actor_learning_rate_follows_a_cosine_to_zero():
    """With max_steps=2 the actor's lr is lr, lr/2, 0 on updates 1, 2, 3: Adam's normalized
    step is the same as with a constant lr, so the parameter changes are in those ratios."""
    grads = [{"w": jnp.array([0.3, -2.0])}, {"w": jnp.array([-1.0, 0.5])},
             {"w": jnp.array([2.0, 1.0])}]
    steps = {}
    for schedule in ("cosine", "constant"):
        cfg = iql.Config(max_steps=2, actor_lr_schedule=schedule, actor_lr=0.1)
        tx = iql.optimizers(cfg)[0]
        opt = tx.init({"w": jnp.zeros(2)})
        steps[schedule] = []
        for g in grads:
            update, opt = tx.update(g, opt)
            steps[schedule].append(np.asarray(update["w"]))
    cosine, constant = np.stack(steps["cosine"]), np.stack(steps["constant"])
    np.testing.assert_allclose(cosine[0], constant[0], rtol=1e-6)
    np.testing.assert_allclose(cosine[1], 0.5 * constant[1], rtol=1e-6)
    assert np.all(cosine[2] == 0) and np.abs(constant[2]).min() > 1e-3
    np.testing.assert_allclose(np.abs(constant[0]), 0.1, rtol=1e-4)  # Adam's first step: lr


def test_act_is_the_clipped_mean_or_a_clipped_sample():
    state, batch = make_state(), fixed_batch()
    b = as_np(batch)
    mean, log_std = np_actor(state.actor, b.obs)
    det = ACT(state, batch.obs, jax.random.PRNGKey(0), True)
    np.testing.assert_allclose(np.asarray(det), mean, rtol=1e-5, atol=1e-6)
    key = jax.random.PRNGKey(7)
    sample = np.asarray(ACT(state, batch.obs, key, False))
    noise = np.asarray(jax.random.normal(key, (64, 3)), np.float64)
    np.testing.assert_allclose(sample, np.clip(mean + np.exp(log_std) * noise, -1, 1),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(sample).max() == 1.0  # std e^2 on the last dimension: samples are clipped


def test_learns_the_expectile_and_the_better_action():
    """A one-state bandit, every transition terminal, reward 1 when a[0] > 0 else 0, half and
    half: Q -> r, V -> the 0.7-expectile of {0, 1} = 0.7 (not the mean 0.5), and the policy's
    mean of a[0] (+-0.5 in the data) -> the weighted mean with weights exp(beta * (Q - V)):
    0.5 * (e^(3 * 0.3) - e^(-3 * 0.7)) / (e^(3 * 0.3) + e^(-3 * 0.7)) = 0.5 * tanh(1.5)."""
    n = 64
    rng = np.random.default_rng(1)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    action = np.c_[0.5 * sign, rng.uniform(-0.5, 0.5, (n, 2))]
    obs = np.tile(rng.normal(size=(1, 5)), (n, 1))
    batch = fixed_batch().replace(obs=jnp.asarray(obs, jnp.float32),
                                  next_obs=jnp.asarray(obs, jnp.float32),
                                  action=jnp.asarray(action, jnp.float32),
                                  reward=jnp.asarray(sign > 0, jnp.float32), terminal=jnp.ones(n))
    cfg = iql.Config(hidden=(16, 16), **FAST)
    state = INIT(jax.random.PRNGKey(1), SPEC, cfg)
    for key in jax.random.split(jax.random.PRNGKey(0), 1500):
        state, _ = UPDATE(state, batch, key)
    v = float(iql.value_fn(state.value, cfg, batch.obs[:1])[0])
    assert abs(v - 0.7) < 0.01, v
    mean = float(ACT(state, batch.obs[:1], jax.random.PRNGKey(0), True)[0, 0])
    assert abs(mean - 0.5 * np.tanh(1.5)) < 0.01, mean


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="expectile"):
        iql.init(jax.random.PRNGKey(0), SPEC, iql.Config(expectile=1.0))
    with pytest.raises(ValueError, match="actor_lr_schedule"):
        iql.init(jax.random.PRNGKey(0), SPEC, iql.Config(actor_lr_schedule="linear"))


def test_twin_critic_loss_is_the_sum_of_the_two_errors():
    """The authors' ((q1 - y)^2 + (q2 - y)^2).mean(), not CORL's average of the two: critic 1
    errs by (1, 2) -> 2.5, critic 2 by (3, 4) -> 12.5; the sum is 15 (the average 7.5)."""
    q = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    assert float(iql.twin_td_loss(q, jnp.zeros(2))) == pytest.approx(15.0)


def test_reward_scale_counts_whole_episodes_only():
    """Time limit 3. Episode 0 (1, 2, 3) reaches it: return 6; episode 1 (1, 1) terminates:
    return 2; episode 2 (10, 10) is cut by the end of the data: left out (CORL's
    return_reward_range). Scale 1000 / (6 - 2) = 250, not 1000 / (20 - 2) = 55.6."""
    from offbench.loops import offline

    rewards = np.array([1, 2, 3, 1, 1, 10, 10], np.float32)
    terminals = np.array([0, 0, 0, 0, 1, 0, 0], np.float32)
    lengths = np.array([3, 2, 2])
    assert offline.return_range_scale(rewards, terminals, lengths, 3) == pytest.approx(250.0)
    # no whole episode (data shorter than one): every episode counts, 1000 / (20 - 1)
    assert offline.return_range_scale(np.array([10, 10, 1], np.float32), np.zeros(3),
                                      np.array([2, 1]), 3) == pytest.approx(1000.0 / 19.0)


def test_harness_scales_iql_rewards_by_the_whole_episode_range(minari_root):
    """IQL's reward scale through the harness: 1000 over the range of the whole episodes'
    returns (hopper's time limit is 1000 steps). One episode cut by the end of its collection
    stream is given the dataset's highest return, so counting it would change the scale."""
    from offbench.data import load
    from offbench.loops import offline

    from conftest import TINY_DATASET

    dataset = load(TINY_DATASET)
    rewards = np.asarray(dataset.rewards, np.float64).copy()
    terminals = np.asarray(dataset.terminals)
    lengths = np.asarray(dataset.metadata["episode_lengths"])
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    whole = (terminals[starts + lengths - 1] > 0) | (lengths >= 1000)
    cut = int(np.flatnonzero(~whole)[0])
    rewards[starts[cut]:starts[cut] + lengths[cut]] += 100.0 / lengths[cut]
    dataset = dataset.replace(rewards=jnp.asarray(rewards, jnp.float32))
    rewards = np.asarray(dataset.rewards, np.float64)
    returns = np.add.reduceat(rewards, starts)
    assert returns.argmax() == cut and whole.any()
    expected = 1000.0 / (returns[whole].max() - returns[whole].min())
    prepared = offline.prepare(iql, iql.Config(), dataset)
    assert prepared.reward_scale == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(np.asarray(prepared.arrays["reward"]), rewards * expected,
                               rtol=1e-5)
