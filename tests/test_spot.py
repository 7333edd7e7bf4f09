"""SPOT: the VAE's -ELBO on a fixed batch against a float64 numpy computation, the actor's
support term built from it, the VAE-then-policy order of updates, and the fine-tuning lambda
schedule."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from offbench.algorithms import EnvSpec
from offbench_baselines import spot, td3_bc

from np_reference import fixed_batch, np_critics, np_mlp

SPEC = EnvSpec(5, 3)
CFG = spot.Config(hidden=(16, 16), vae_hidden=(12, 12), vae_steps=2, lmbda=0.7)


def np_neg_elbo(vae, obs, action, noise, beta):
    p = vae["params"]
    out = np_mlp(p["encoder"], np.concatenate([obs, action], -1))
    mean, log_std = out[:, :6], np.clip(out[:, 6:], -4.0, 15.0)
    std = np.exp(log_std)
    z = mean + std * noise
    recon = np.tanh(np_mlp(p["decoder"], np.concatenate([obs, z], -1)))
    kl = -0.5 * (1.0 + np.log(std ** 2) - mean ** 2 - std ** 2)
    return ((recon - action) ** 2).mean(-1) + beta * kl.mean(-1)


def test_neg_elbo_by_hand():
    state = spot.init(jax.random.PRNGKey(1), SPEC, CFG)
    batch = fixed_batch(64)
    key = jax.random.PRNGKey(7)
    noise = np.asarray(jax.random.normal(key, (64, 6)), np.float64)  # latent 2|A|
    obs, action = (np.asarray(x, np.float64) for x in (batch.obs, batch.action))
    by_hand = np_neg_elbo(state.vae, obs, action, noise, 0.5)
    ours = np.asarray(spot.neg_elbo(state.vae, state, batch.obs, batch.action, key))
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5)
    loss, _ = spot.vae_loss(state.vae, state, batch, key)
    np.testing.assert_allclose(float(loss), by_hand.mean(), rtol=1e-5)

    # the actor's loss: -Q1/mean|Q1| + lambda * -ELBO of the actor's own action
    pi = np.tanh(np_mlp(state.actor["params"], obs))
    q1 = np_critics(state.critic, obs, pi)[0]
    support = np_neg_elbo(state.vae, obs, pi, noise, 0.5).mean()
    a_loss, info = spot.actor_loss(state.actor, state, batch, key, jnp.float32(0.7))
    np.testing.assert_allclose(float(info["support_loss"]), support, rtol=1e-5)
    np.testing.assert_allclose(float(a_loss), -q1.mean() / np.abs(q1).mean() + 0.7 * support,
                               rtol=1e-5)


def test_vae_first_then_policy_and_the_cooled_lambda():
    state = spot.init(jax.random.PRNGKey(0), SPEC, CFG)
    batch = fixed_batch(32)
    update = jax.jit(spot.update)
    for i in range(4):
        old = state
        state, info = update(state, batch, jax.random.PRNGKey(i))
        vae_moved = not np.allclose(old.vae["params"]["encoder"]["Dense_0"]["kernel"],
                                    state.vae["params"]["encoder"]["Dense_0"]["kernel"])
        critic_moved = not np.allclose(
            old.critic["params"]["VmapCritic_0"]["MLP_0"]["Dense_0"]["kernel"],
            state.critic["params"]["VmapCritic_0"]["MLP_0"]["Dense_0"]["kernel"])
        assert (vae_moved, critic_moved) == ((True, False) if i < 2 else (False, True))
        assert np.isfinite(float(info["vae_loss"])) == (i < 2)
        assert np.isfinite(float(info["critic_loss"])) == (i >= 2)
    cfg = dataclasses.replace(CFG, lambda_cool_steps=100)
    lam = [float(spot.online_lambda(cfg, jnp.asarray(t))) for t in (0, 50, 80, 90, 500)]
    np.testing.assert_allclose(lam, [0.7, 0.35, 0.7 * 0.2, 0.7 * 0.2, 0.7 * 0.2], rtol=1e-6)
    off = dataclasses.replace(cfg, lambda_cool=False)
    assert float(spot.online_lambda(off, jnp.asarray(90))) == np.float32(0.7)
    state, info = jax.jit(spot.online_update)(state, batch, jax.random.PRNGKey(9))
    assert int(state.online_steps) == 1 and float(info["lmbda"]) == np.float32(0.7)
    assert set(spot.MODES) == {"offline", "o2o"}
    assert isinstance(state, td3_bc.TD3State)


def test_spot_in_the_o2o_loop_fine_tunes_with_the_cooled_lambda():
    from test_o2o import synthetic_prepared

    from offbench.loops import o2o

    cfg = dataclasses.replace(CFG, batch_size=8, lambda_cool_steps=20)
    prepared = synthetic_prepared(obs_size=11, action_size=3)
    config = o2o.resolve(o2o.MixedConfig(mode="o2o", offline_updates=10, online_steps=10,
                                         eval_every=10, eval_episodes=1, episode_length=5,
                                         backend="mujoco"), cfg)
    problem = o2o.Problem(spot, cfg, "hopper", config, prepared)
    arrays = prepared.arrays
    carry = o2o.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
    carry, (out, _) = jax.jit(o2o.make_chunk(problem, 2))(carry, 0, arrays)
    assert int(carry.algo.online_steps) == 10 and int(carry.algo.steps) == 20
    # offline: lambda itself; online: the mean over t = 0..9 of 0.7 * max(0.2, 1 - t / 20)
    np.testing.assert_allclose(out["lmbda"], [0.7, 0.7 * np.mean(1 - np.arange(10) / 20)],
                               rtol=1e-5)
    assert np.isfinite(out["eval_return"]).all()
