"""CQL (and its Lagrange and Cal-QL options) against an independent float64 numpy reference
written from the papers' equations and the authors' code, fed the random draws the
implementation makes (recreated from the same keys: inputs, not computations)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from offbench.algorithms import EnvSpec, apply_overrides, load_algorithm
from offbench_baselines import cql, sac

from np_reference import as_np, fixed_batch, np_actor, np_critics, np_sample

SPEC = EnvSpec(observation_size=5, action_size=3)
B, A, GAMMA = 64, 3, 0.99
EPS32 = float(np.finfo(np.float32).eps)


def make_state(**kw):
    kw = {"hidden": (16, 16), "cql_n_actions": 4, "init_temperature": 0.3,
          "orthogonal_init": False, **kw}  # Flax init: Q of order 1, so every term matters
    cfg = cql.Config(**kw)
    state = cql.init(jax.random.PRNGKey(1), SPEC, cfg)
    other = cql.init(jax.random.PRNGKey(2), SPEC, cfg)  # distinct online and target critics
    return state.replace(target_critic=other.critic, log_alpha_prime=jnp.asarray(0.3, jnp.float32))


def batch_with_mc(mc=None):
    b = fixed_batch()
    mc = np.zeros(B) if mc is None else mc
    return b.replace(extra={"mc_returns": jnp.asarray(mc, jnp.float32)})


def np_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_q_many(critic, obs, actions):
    """Q of every critic at (s_b, a_bj) for actions of shape (B, n, A): shape (N, B, n)."""
    b, n, a = actions.shape
    q = np_critics(critic, np.repeat(obs, n, axis=0), actions.reshape(b * n, a))
    return q.reshape(-1, b, n)


def np_policy_many(actor, obs, noise):
    mean, log_std = np_actor(actor, obs)
    return np_sample(mean[:, None], log_std[:, None], noise)  # (B, n, A), (B, n)


def reference(state, batch, key, critic=None):
    """The CQL critic loss, from the equations; returns the loss and its pieces."""
    cfg, n = state.config, state.config.cql_n_actions
    critic = state.critic if critic is None else critic
    b = as_np(batch)
    # the implementation's draws: key -> (target key, cql key); target key -> (action, subset);
    # cql key -> (uniform, policy at s, policy at s')
    k_target, k_cql = jax.random.split(key)
    k_action, k_subset = jax.random.split(k_target)
    k_random, k_current, k_next = jax.random.split(k_cql, 3)
    subset = np.asarray(jax.random.choice(k_subset, cfg.num_critics, (cfg.num_target_critics,),
                                          replace=False))
    alpha = math.exp(float(state.log_alpha))
    if cfg.cql_max_target_backup:
        noise = np.asarray(jax.random.normal(k_action, (B, n, A)), np.float64)
        a2, logp2 = np_policy_many(state.actor, b.next_obs, noise)
        q2 = np_q_many(state.target_critic, b.next_obs, a2)[subset].min(0)  # (B, n)
        best = q2.argmax(1)
        v = q2[np.arange(B), best]
        logp2 = logp2[np.arange(B), best]
    else:
        noise = np.asarray(jax.random.normal(k_action, (B, A)), np.float64)
        a2, logp2 = np_sample(*np_actor(state.actor, b.next_obs), noise)
        v = np_critics(state.target_critic, b.next_obs, a2)[subset].min(0)
    if cfg.backup_entropy:
        v = v - alpha * logp2
    target = b.reward + GAMMA * (1 - b.terminal) * v
    q = np_critics(critic, b.obs, b.action)  # (N, B)
    td = np.sum(np.mean((q - target) ** 2, axis=1))

    rand = np.asarray(jax.random.uniform(k_random, (B, n, A), minval=-1.0, maxval=1.0),
                      np.float64)
    a_cur, lp_cur = np_policy_many(state.actor, b.obs,
                                   np.asarray(jax.random.normal(k_current, (B, n, A)), np.float64))
    a_nxt, lp_nxt = np_policy_many(state.actor, b.next_obs,
                                   np.asarray(jax.random.normal(k_next, (B, n, A)), np.float64))
    q_rand, q_cur, q_nxt = (np_q_many(critic, b.obs, a) for a in (rand, a_cur, a_nxt))
    out = {"q_cur": q_cur, "q_nxt": q_nxt}
    if cfg.calql:
        mc = b.extra["mc_returns"][None, :, None]
        q_cur, q_nxt = np.maximum(q_cur, mc), np.maximum(q_nxt, mc)
    if cfg.cql_importance_sample:  # densities: uniform 0.5^|A|, the policy's
        cat = np.concatenate([q_rand - A * np.log(0.5), q_cur - lp_cur, q_nxt - lp_nxt], -1)
    else:
        cat = np.concatenate([q_rand, q[..., None], q_cur, q_nxt], -1)
    raw = cfg.cql_temp * np_logsumexp(cat / cfg.cql_temp) - q  # (N, B)
    diff = np.clip(raw, cfg.cql_clip_diff_min, cfg.cql_clip_diff_max).mean(1)
    if cfg.lagrange:
        a_prime = min(math.exp(float(state.log_alpha_prime)), 1e6)
        cql_term = np.sum(a_prime * cfg.cql_alpha * (diff - cfg.target_action_gap))
    else:
        cql_term = cfg.cql_alpha * diff.sum()
    return td + cql_term, {**out, "td": td, "cql": cql_term, "diff": diff, "raw": raw}


CASES = {
    "default": {},
    "no_importance_sampling": {"cql_importance_sample": False},
    "temperature_and_entropy_backup": {"cql_temp": 0.5, "backup_entropy": True},
    "max_target_backup": {"cql_max_target_backup": True, "backup_entropy": True},
    "lagrange": {"lagrange": True, "target_action_gap": 2.0},
    "three_critics": {"num_critics": 3, "num_target_critics": 2},
}


@pytest.mark.parametrize("case", CASES)
def test_critic_loss_matches_reference(case):
    state, key = make_state(**CASES[case]), jax.random.PRNGKey(3)
    batch = batch_with_mc()
    loss, info = cql.critic_loss(state.critic, state, batch, key)
    expected, ref = reference(state, batch, key)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["td_loss"]), ref["td"], rtol=1e-5)
    np.testing.assert_allclose(float(info["cql_loss"]), ref["cql"], rtol=1e-5)
    np.testing.assert_allclose(float(info["cql_diff"]), ref["diff"].mean(), rtol=1e-5)
    assert abs(ref["cql"]) > 0.1 * abs(ref["td"])  # the regularizer is not negligible here


def test_clipped_gap_matches_reference():
    """Clip bounds chosen from the data so that both bounds are active for some rows."""
    state, key, batch = make_state(), jax.random.PRNGKey(4), batch_with_mc()
    raw = reference(state, batch, key)[1]["raw"]
    lo, hi = np.quantile(raw, 0.25), np.quantile(raw, 0.75)
    state = state.replace(config=dataclasses.replace(state.config, cql_clip_diff_min=float(lo),
                                                     cql_clip_diff_max=float(hi)))
    loss, _ = cql.critic_loss(state.critic, state, batch, key)
    expected, ref = reference(state, batch, key)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert (ref["raw"] < lo).any() and (ref["raw"] > hi).any()  # both bounds bind


def calql_state_and_batch(key):
    """Cal-QL, MC returns at the median policy-action Q of the first critic: about half bind."""
    state = make_state(calql=True)
    q_cur = reference(state, batch_with_mc(), key)[1]["q_cur"]
    return state, batch_with_mc(np.median(q_cur[0], axis=1))


def test_calql_matches_reference():
    key = jax.random.PRNGKey(5)
    state, batch = calql_state_and_batch(key)
    loss, info = cql.critic_loss(state.critic, state, batch, key)
    expected, ref = reference(state, batch, key)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    bound = np.asarray(batch.extra["mc_returns"])[None, :, None]
    below = np.concatenate([ref["q_cur"] < bound, ref["q_nxt"] < bound], -1).mean()
    assert 0.1 < below < 0.9
    np.testing.assert_allclose(float(info["calql_bound_rate"]), below, atol=1e-6)
    plain = cql.critic_loss(state.critic, state.replace(
        config=dataclasses.replace(state.config, calql=False)), batch, key)[0]
    assert float(loss) > float(plain) + 1e-3  # raising Q-values can only raise the logsumexp


def constant_critic(state, values):
    """Every critic i outputs values[i] everywhere: zero output kernel, bias values[i]."""
    critic = jax.tree.map(lambda x: x, state.critic)
    mlp = critic["params"]["VmapCritic_0"]["MLP_0"]
    last = max(mlp, key=lambda name: int(name.split("_")[1]))
    mlp[last] = {"kernel": jnp.zeros_like(mlp[last]["kernel"]),
                 "bias": jnp.asarray(values, jnp.float32)[:, None]}
    return critic, last


def test_calql_by_hand_with_constant_critics():
    """Q_i = c_i everywhere. The regularizer of a row is then
    log(n 2^|A| e^c + sum_j e^(max(c, m) - log pi_j)) - c, with pi_j the sampled actions'
    densities; its derivative in c is the uniform actions' share of the sum minus 1 where the
    bound m binds, and exactly 0 where it does not (CQL alone is shift-invariant)."""
    state, key = make_state(calql=True), jax.random.PRNGKey(6)
    c = np.array([0.5, -0.5])
    mc = np.where(np.arange(B) % 2 == 0, -10.0, 3.0)  # even rows: bound idle; odd: it binds
    batch = batch_with_mc(mc)
    critic, last = constant_critic(state, c)
    n = state.config.cql_n_actions
    _, k_cql = jax.random.split(key)
    _, k_current, k_next = jax.random.split(k_cql, 3)
    b = as_np(batch)
    lp = np.concatenate([np_policy_many(state.actor, o, np.asarray(
        jax.random.normal(k, (B, n, A)), np.float64))[1]
        for o, k in ((b.obs, k_current), (b.next_obs, k_next))], axis=1)  # (B, 2n)
    for i in range(2):
        uniform = n * np.exp(c[i] + A * np.log(2.0))
        policy = np.exp(np.maximum(c[i], mc)[:, None] - lp).sum(1)
        row = np.log(uniform + policy) - c[i]
        expected_grad = np.where(mc > c[i], uniform / (uniform + policy) - 1.0, 0.0).mean()

        def gap(bias, i=i):
            params = jax.tree.map(lambda x: x, critic)
            params["params"]["VmapCritic_0"]["MLP_0"][last]["bias"] = bias
            q_data = sac.networks(state.config, SPEC)[1].apply(params, batch.obs, batch.action)
            return cql.conservative_gap(params, state, batch, q_data, k_cql)[0][i]

        bias = critic["params"]["VmapCritic_0"]["MLP_0"][last]["bias"]
        value, grad = jax.value_and_grad(gap)(bias)
        np.testing.assert_allclose(float(value), row.mean(), rtol=1e-5)
        np.testing.assert_allclose(float(grad[i, 0]), expected_grad, rtol=1e-4, atol=1e-6)
        assert expected_grad < -0.01  # the bound binds on odd rows


@pytest.mark.parametrize("case", ["default", "calql_lagrange"])
def test_critic_gradients_match_finite_differences(case):
    key = jax.random.PRNGKey(7)
    if case == "default":
        state, batch = make_state(), batch_with_mc()
    else:
        state, batch = calql_state_and_batch(key)
        state = state.replace(config=dataclasses.replace(state.config, lagrange=True,
                                                         target_action_gap=1.0))
    grads = jax.grad(lambda p: cql.critic_loss(p, state, batch, key)[0])(state.critic)
    for layer, index in (("Dense_1", (1, 2, 3)), ("Dense_0", (0, 6, 4)), ("Dense_2", (1, 5, 0))):
        g = float(grads["params"]["VmapCritic_0"]["MLP_0"][layer]["kernel"][index])

        def loss_at(delta, layer=layer, index=index):
            params = jax.tree.map(lambda x: np.array(x, np.float64), state.critic)
            params["params"]["VmapCritic_0"]["MLP_0"][layer]["kernel"][index] += delta
            return reference(state, batch, key, critic=params)[0]

        eps = 1e-6
        numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-5)


def test_actor_loss_behaviour_cloning_then_sac():
    """bc_steps: alpha log pi(a|s) - log pi(a_data|s) for the first bc_steps updates (data
    actions at the bounds clipped to 1 - eps, as torch's TanhTransform), then SAC's."""
    state = make_state(bc_steps=10)
    action = fixed_batch().action.at[0, 0].set(1.0).at[1, 2].set(-1.0)
    batch, key = batch_with_mc().replace(action=action), jax.random.PRNGKey(8)
    b = as_np(batch)
    mean, log_std = np_actor(state.actor, b.obs)
    a, logp = np_sample(mean, log_std, np.asarray(jax.random.normal(key, (B, A)), np.float64))
    alpha = math.exp(float(state.log_alpha))
    data = np.clip(b.action, -1 + EPS32, 1 - EPS32)
    u = np.arctanh(data)
    data_logp = np.sum(-0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std
                       - 0.5 * np.log(2 * np.pi) - np.log(1 - data ** 2), axis=-1)
    loss, _ = cql.actor_loss(state.actor, state, batch, key)
    np.testing.assert_allclose(float(loss), np.mean(alpha * logp) - data_logp.mean(), rtol=1e-5)
    after = state.replace(steps=jnp.asarray(10, jnp.int32))
    loss, _ = cql.actor_loss(after.actor, after, batch, key)
    q = np_critics(state.critic, b.obs, a).min(0)
    np.testing.assert_allclose(float(loss), np.mean(alpha * logp - q), rtol=1e-5)


@pytest.fixture(scope="module")
def lagrange_update():
    """Jitted Lagrange updates (target_action_gap -1, below the initial gap), shared."""
    state, batch, key = make_state(lagrange=True), batch_with_mc(), jax.random.PRNGKey(9)
    update = jax.jit(cql.update)
    new, metrics = update(state, batch, key)
    return state, batch, key, new, metrics, update


def test_update_takes_every_gradient_at_the_old_parameters(lagrange_update):
    """Critic, actor, temperature and alpha' gradients all at the pre-update state (as the
    authors' code), each through its Adam; the target is the Polyak average. Checked on a
    second update, where Adam's step depends on the gradients' magnitudes, not only signs."""
    _, batch, _, state, _, update = lagrange_update
    key = jax.random.PRNGKey(11)
    new, metrics = update(state, batch, key)
    assert all(np.shape(v) == () and np.isfinite(float(v)) for v in metrics.values())
    k_critic, k_actor = jax.random.split(key)
    cfg = state.config
    g_critic, info = jax.grad(cql.critic_loss, has_aux=True)(state.critic, state, batch, k_critic)
    g_actor, actor_info = jax.grad(cql.actor_loss, has_aux=True)(state.actor, state, batch,
                                                                k_actor)
    g_alpha = jax.grad(sac.temperature_loss)(state.log_alpha, actor_info["entropy"],
                                              -float(A))
    g_prime = jax.grad(cql.alpha_prime_loss)(state.log_alpha_prime, info["cql_diff"], cfg)
    for lr, params, grads, opt, got in (
            (cfg.critic_lr, state.critic, g_critic, state.critic_opt, new.critic),
            (cfg.actor_lr, state.actor, g_actor, state.actor_opt, new.actor),
            (cfg.temperature_lr, state.log_alpha, g_alpha, state.alpha_opt, new.log_alpha),
            (cfg.critic_lr, state.log_alpha_prime, g_prime, state.alpha_prime_opt,
             new.log_alpha_prime)):
        want = optax.apply_updates(params, optax.adam(lr).update(grads, opt, params)[0])
        for x, y, p in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(params),
                           strict=True):  # compare the steps taken
            np.testing.assert_allclose(np.asarray(x) - np.asarray(p),
                                       np.asarray(y) - np.asarray(p), rtol=1e-3, atol=lr * 1e-3)
    for online, old, target in zip(jax.tree.leaves(new.critic),
                                   jax.tree.leaves(state.target_critic),
                                   jax.tree.leaves(new.target_critic), strict=True):
        np.testing.assert_allclose(np.asarray(target), cfg.tau * np.asarray(online)
                                   + (1 - cfg.tau) * np.asarray(old), rtol=1e-6, atol=1e-7)


def test_lagrange_multiplier_direction(lagrange_update):
    """The paper's min_Q max_{alpha' >= 0} alpha' (gap - tau), tau = target_action_gap:
    alpha' grows while the gap exceeds tau and shrinks otherwise. The gradient in log alpha' is
    -alpha' * cql_alpha * (gap - tau); the update's Adam first step is then +-lr; at the 1e6
    cap the gradient vanishes and the critic's weight is 1e6 * cql_alpha."""
    state, batch, key, new, metrics, _ = lagrange_update
    k_critic, _ = jax.random.split(key)
    gap = reference(state, batch, k_critic)[1]["diff"].mean()  # the gap the update saw
    tau = state.config.target_action_gap
    assert gap > tau
    step = float(new.log_alpha_prime - state.log_alpha_prime)
    np.testing.assert_allclose(step, +state.config.critic_lr, rtol=1e-3)  # grows
    np.testing.assert_allclose(float(metrics["alpha_prime"]), math.exp(0.3 + step), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["alpha_prime_loss"]),
                               -math.exp(0.3) * state.config.cql_alpha * (gap - tau), rtol=1e-5)
    for target, sign in ((gap - 1.0, -1), (gap + 1.0, +1)):  # d loss / d log alpha'
        cfg = dataclasses.replace(state.config, target_action_gap=float(target))
        grad = float(jax.grad(cql.alpha_prime_loss)(state.log_alpha_prime, jnp.asarray(gap), cfg))
        np.testing.assert_allclose(grad, -math.exp(0.3) * cfg.cql_alpha * (gap - target),
                                   rtol=1e-5)
        assert np.sign(grad) == sign  # descent raises alpha' iff gap > tau
    capped = state.replace(log_alpha_prime=jnp.asarray(math.log(2e6), jnp.float32))
    assert float(jax.grad(cql.alpha_prime_loss)(capped.log_alpha_prime, jnp.asarray(gap),
                                                capped.config)) == 0.0
    _, info = cql.critic_loss(capped.critic, capped, batch, k_critic)
    np.testing.assert_allclose(float(info["cql_loss"]),
                               2 * 1e6 * capped.config.cql_alpha * (gap - tau), rtol=1e-4)


def test_conservative_training_ranks_data_actions_above_random_ones():
    """Zero reward, terminal: TD alone pins Q(s, a_data) to 0 and leaves other actions
    alone (with cql_alpha=0 the two means stay within 0.01 here); the regularizer pushes Q of
    uniform actions well below that of data actions (by ~0.95 after these 300 updates)."""
    state = make_state(critic_lr=1e-3)  # plain CQL
    batch = batch_with_mc().replace(reward=jnp.zeros(B), terminal=jnp.ones(B))
    update = jax.jit(cql.update)
    diffs = []
    for k in jax.random.split(jax.random.PRNGKey(0), 300):
        state, metrics = update(state, batch, k)
        diffs.append(float(metrics["cql_diff"]))
    assert float(state.log_alpha_prime) == np.float32(0.3)  # alpha' moves only with lagrange
    critic_net = sac.networks(state.config, SPEC)[1]
    q_data = critic_net.apply(state.critic, batch.obs, batch.action)
    rand = jax.random.uniform(jax.random.PRNGKey(1), (B, A), minval=-1.0, maxval=1.0)
    q_rand = critic_net.apply(state.critic, batch.obs, rand)
    assert float(q_data.mean() - q_rand.mean()) > 0.5, (q_data.mean(), q_rand.mean())
    assert diffs[-1] < diffs[0] - 0.5, (diffs[0], diffs[-1])


def test_orthogonal_critic_initialization():
    state = cql.init(jax.random.PRNGKey(0), SPEC, cql.Config(hidden=(16, 16)))
    mlp = state.critic["params"]["VmapCritic_0"]["MLP_0"]
    for name, gain in (("Dense_0", math.sqrt(2)), ("Dense_1", math.sqrt(2)),
                       ("Dense_2", 1e-2)):
        for i in range(2):
            k = np.asarray(mlp[name]["kernel"][i], np.float64)
            gram = k @ k.T if k.shape[0] < k.shape[1] else k.T @ k  # the smaller side
            np.testing.assert_allclose(gram, gain ** 2 * np.eye(len(gram)), atol=1e-5)
            assert not np.any(np.asarray(mlp[name]["bias"]))
    assert not np.allclose(mlp["Dense_1"]["kernel"][0], mlp["Dense_1"]["kernel"][1])
    for x, y in zip(jax.tree.leaves(state.critic), jax.tree.leaves(state.target_critic),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_contract_and_published_defaults():
    module = load_algorithm("cql")
    assert module is cql and set(cql.MODES) == {"offline", "o2o"}
    assert "mc_returns" in cql.DATASET_FIELDS
    cfg = cql.Config()  # CORL's D4RL locomotion configuration
    assert (cfg.hidden, cfg.actor_lr, cfg.critic_lr, cfg.temperature_lr) == (
        (256, 256, 256), 3e-5, 3e-4, 3e-5)
    assert (cfg.batch_size, cfg.discount, cfg.tau, cfg.init_temperature) == (256, 0.99, 5e-3, 1)
    assert (cfg.cql_alpha, cfg.cql_n_actions, cfg.cql_temp, cfg.target_action_gap) == (
        10.0, 10, 1.0, -1.0)
    assert cfg.cql_importance_sample and cfg.normalize_obs and cfg.orthogonal_init
    assert not (cfg.backup_entropy or cfg.lagrange or cfg.calql or cfg.cql_max_target_backup)
    assert (cfg.bc_steps, cfg.reward_scale, cfg.reward_bias) == (0, 1.0, 0.0)
    assert cfg.cql_clip_diff_min == -math.inf and cfg.cql_clip_diff_max == math.inf
    cfg = apply_overrides(cfg, ["lagrange=true", "target_action_gap=5", "cql_clip_diff_min=-200"])
    assert cfg.lagrange and cfg.target_action_gap == 5.0 and cfg.cql_clip_diff_min == -200.0
    with pytest.raises(ValueError, match="cql_n_actions"):
        cql.init(jax.random.PRNGKey(0), SPEC, cql.Config(cql_n_actions=0))


def test_full_profile_normalizes_rewards_on_hopper_medium_only():
    """CORL's configs/offline/cql turn normalize_reward on for hopper-medium alone, with
    reward_scale 1.0 and reward_bias 0.0: the full profile sets exactly that."""
    import tomllib
    from pathlib import Path

    spec = tomllib.loads((Path(__file__).parents[1] / "tasks/sweeps/full.toml").read_text())
    per_dataset = spec["algorithms_set"]["cql"]["datasets"]
    assert per_dataset == {"hopper-medium": ["normalize_reward_by_returns=true"]}
    cfg = apply_overrides(cql.Config(), per_dataset["hopper-medium"])
    assert cfg.normalize_reward_by_returns and (cfg.reward_scale, cfg.reward_bias) == (1.0, 0.0)
