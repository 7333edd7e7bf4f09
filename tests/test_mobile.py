"""MOBILE against independent references: its Bellman-inconsistency penalty against float64
numpy written from the equation (baselines/mobile.py docstring), the clipped target, and
`offbench check`. The model and rollout code it shares with MOPO is tested in test_mopo.py."""

import jax
import jax.numpy as jnp
import numpy as np
from test_mopo import TINY_OVERRIDES, np_ensemble, small_model

from offbench.algorithms import EnvSpec, Transition
from offbench.models import rollouts
from offbench_baselines import mobile, mopo, sac

from np_reference import np_actor, np_critics

SAC = sac.Config(hidden=(8, 8), backup_entropy=False)
CONFIG = mobile.Config(num_samples=3, hidden=(8, 8))


def small_state(seed=0):
    return mopo.MOPOState(sac=sac.init(jax.random.PRNGKey(seed + 1), EnvSpec(4, 2), SAC),
                          model=small_model(seed), buffer=rollouts.empty(16, 4, 2),
                          termination=jnp.asarray(0), config=CONFIG)


def test_bellman_penalty_matches_numpy():
    state = small_state()
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(5, 4)).astype(np.float32)
    action = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    got = mobile.bellman_penalty(state, jnp.asarray(obs), jnp.asarray(action), key)
    # the same random draws, then everything in float64 numpy
    k_model, k_action = jax.random.split(key)
    model = state.model
    noise = np.asarray(jax.random.normal(k_model, (3, 2, 5, 5)), np.float64)
    as64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = (np.concatenate([obs, action], -1) - as64(model.in_mean)) / as64(model.in_std)
    mean, logvar = np_ensemble(model.params, x)
    elites = np.asarray(model.elites)
    mean = (mean * as64(model.out_std) + as64(model.out_mean))[elites]
    std = (np.exp(0.5 * logvar) * as64(model.out_std))[elites]
    next_obs = obs + (mean + std * noise)[..., :-1]  # (J, K, B, obs)
    flat = next_obs.reshape(-1, 4)
    a_mean, a_log_std = np_actor(state.sac.actor, flat)
    a_noise = np.asarray(jax.random.normal(k_action, (flat.shape[0], 2)), np.float64)
    next_action = np.tanh(a_mean + np.exp(a_log_std) * a_noise)
    q = np_critics(state.sac.target_critic, flat, next_action).min(0).reshape(3, 2, 5)
    expected = q.mean(0).std(0, ddof=1)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5)
    assert expected.min() > 0  # not trivially zero


def test_critic_target_is_clipped_at_zero():
    state = sac.init(jax.random.PRNGKey(0), EnvSpec(4, 2), SAC)
    rng = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    batch = Transition(obs=f(8, 4), action=jnp.tanh(f(8, 2)), reward=jnp.full(8, -1e3),
                       next_obs=f(8, 4), terminal=jnp.zeros(8))
    loss, info = mobile.critic_loss(state.critic, state, batch, jax.random.PRNGKey(1))
    q = np_critics(state.critic, np.asarray(batch.obs, np.float64),
                   np.asarray(batch.action, np.float64))
    np.testing.assert_allclose(float(loss), 0.5 * np.mean(q ** 2, axis=-1).sum(), rtol=1e-5)
    assert float(info["target_mean"]) == 0.0


def test_mobile_keeps_the_contract():
    from offbench.harness.check import check

    lines = []
    assert check("mobile", [*TINY_OVERRIDES, "num_samples=2"], updates=2, log=lines.append), \
        "\n".join(lines)


def test_offbench_run_mobile_true_dynamics(minari_root, tmp_path):
    """`--set dynamics=true`: env rollouts, no model, and the Bellman penalty 0 (one
    deterministic model: every elite's target is the same)."""
    import pandas as pd
    from test_mopo import TINY_DATASET

    from offbench import cli

    flags = ["--updates", "20", "--eval-every", "20", "--eval-episodes", "2",
             "--checkpoint-every", "20", "--episode-length", "20", "--backend", "mujoco"]
    sets = [x for o in [*TINY_OVERRIDES, "num_samples=2", "dynamics=true"]
            for x in ("--set", o)]
    out = tmp_path / "run"
    assert cli.main(["run", "mobile", TINY_DATASET, "--seeds", "2", *flags, *sets,
                     "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert "model_holdout_mse" not in metrics.columns
    assert (metrics.bellman_penalty == 0).all() and not metrics.diverged.any()
