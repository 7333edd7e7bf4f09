"""Hybrid sim-to-real tasks and H2O: task names round-trip and bad ones are one clear error; the
simulator gets the overrides and evaluation the real task; H2O's discriminators learn a larger
dynamics gap on transitions of a mismatched (shifted) linear system than on real ones; a hybrid
H2O period runs end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_o2o import synthetic_prepared

import offbench.envs as envs
from offbench import hybrid
from offbench.algorithms import EnvSpec, Transition
from offbench.loops import o2o
from offbench_baselines import h2o


@pytest.mark.parametrize("name,dataset,overrides", [
    ("halfcheetah-medium@sim:gravity=0.5", "halfcheetah-medium", {"gravity": 0.5}),
    ("hopper-medium-replay-100k@sim:friction=0.8,gear=1.25,mass.torso=1.5",
     "hopper-medium-replay-100k", {"friction": 0.8, "gear": 1.25, "mass": {"torso": 1.5}}),
])
def test_hybrid_names_round_trip(name, dataset, overrides):
    task = hybrid.parse(name)
    assert task.dataset == dataset and task.overrides() == overrides
    assert task.name == name and hybrid.parse(task.name) == task
    assert hybrid.split(name) == (dataset, overrides)
    # keys in any order, values in any float spelling: the same task, one canonical name
    assert hybrid.parse("hopper-medium@sim:mass=2,gravity=.5").name == \
        "hopper-medium@sim:gravity=0.5,mass=2.0"
    assert hybrid.split("hopper-medium") == ("hopper-medium", None)


@pytest.mark.parametrize("name,message", [
    ("hopper-medium@sim:", "no overrides"),
    ("hopper-medium@sim:wind=2", "unknown override 'wind'"),
    ("hopper-medium@sim:gravity", "not KEY=VALUE"),
    ("hopper-medium@sim:gravity=abc", "not a number"),
    ("hopper-medium@sim:gravity=-1", "not a positive finite scale"),
    ("hopper-medium@sim:gravity=nan", "not a positive finite scale"),
    ("hopper-medium@sim:gravity=1,gravity=2", "given twice"),
    ("hopper-medium@sim:friction.floor=2", "only"),
    ("hopper-medium@sim:mass=2,mass.torso=1", "both for all and for one name"),
    ("hopper-medium@real:gravity=1", "no '@sim:' part"),
    ("@sim:gravity=1", "dataset id"),
])
def test_bad_hybrid_names(name, message):
    with pytest.raises(ValueError, match="bad hybrid task") as err:
        hybrid.parse(name)
    assert message in str(err.value)


def linear_batch(key, n, shift, noise=0.05):
    """s' = A s + B a (+ shift on every coordinate for the mismatched simulator) + noise."""
    k_s, k_a, k_n = jax.random.split(key, 3)
    a_mat = jnp.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
    b_mat = jnp.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]])
    s = jax.random.normal(k_s, (n, 3))
    a = jax.random.uniform(k_a, (n, 2), minval=-1, maxval=1)
    s2 = s @ a_mat.T + a @ b_mat.T + shift + noise * jax.random.normal(k_n, (n, 3))
    return s, a, s2


def mixed(key, n=64, shift=0.5):
    k_real, k_sim = jax.random.split(key)
    real, sim = linear_batch(k_real, n, 0.0), linear_batch(k_sim, n, shift)
    obs, action, next_obs = (jnp.concatenate(pair) for pair in zip(real, sim, strict=True))
    return Transition(obs=obs, action=action, reward=jnp.zeros(2 * n), next_obs=next_obs,
                      terminal=jnp.zeros(2 * n),
                      extra={"from_dataset": jnp.r_[jnp.ones(n), jnp.zeros(n)]})


def test_discriminators_find_the_dynamics_gap_of_a_shifted_simulator():
    cfg = h2o.Config(hidden=(16,), disc_hidden=(32, 32), disc_noise=0.0)
    state = h2o.init(jax.random.PRNGKey(0), EnvSpec(3, 2), cfg)

    def train(state, key):
        k_batch, k_step = jax.random.split(key)
        return h2o.discriminator_step(state, mixed(k_batch), k_step)[0], None

    state, _ = jax.jit(lambda s, ks: jax.lax.scan(train, s, ks))(
        state, jax.random.split(jax.random.PRNGKey(1), 400))
    held_out = mixed(jax.random.PRNGKey(99), n=500)  # fresh transitions of both systems
    gap = np.asarray(h2o.log_gap(state, held_out.obs, held_out.action, held_out.next_obs))
    real_gap, sim_gap = gap[:500], gap[500:]
    assert sim_gap.mean() > real_gap.mean() + 1.0, (sim_gap.mean(), real_gap.mean())
    assert np.median(sim_gap) > np.quantile(real_gap, 0.9)
    # so the simulated transitions get the smaller Bellman weights; real rows keep weight 1
    w = np.asarray(h2o.importance_weights(state, held_out))
    assert (w[:500] == 1.0).all() and w[500:].mean() < 0.5
    # the (s, a) marginals are the same: D_sa alone cannot tell the systems apart
    sa = jnp.concatenate([held_out.obs, held_out.action], -1)
    p_real = jax.nn.sigmoid(h2o._logits(state.d_sa, state, sa))
    assert abs(float(p_real[:500].mean() - p_real[500:].mean())) < 0.1


def test_a_hybrid_h2o_period_trains_in_the_simulator_and_evaluates_on_the_real_task():
    cfg = h2o.Config(hidden=(16,), disc_hidden=(16,), batch_size=8, cql_n_actions=2)
    sim = hybrid.parse("hopper-random@sim:gravity=0.5").overrides()
    config = o2o.resolve(o2o.MixedConfig(mode="hybrid", offline_updates=0, online_steps=10,
                                         eval_every=10, eval_episodes=1, episode_length=5,
                                         backend="mujoco"), cfg)
    problem = o2o.Problem(h2o, cfg, "hopper", config, synthetic_prepared(), sim_overrides=sim)
    assert problem.mark_source
    # the training env is the simulator: the same wrapped env without overrides resets to the
    # same state but steps elsewhere; evaluation runs on the real task
    sim_env = problem.online.env
    real_env = envs.make("hopper", "mujoco", episode_length=5)
    assert problem.offline.eval_env.overrides == {} and sim_env.overrides == sim
    key = jax.random.PRNGKey(0)
    zero = jnp.zeros(sim_env.action_size)
    np.testing.assert_array_equal(sim_env.reset(key).obs, real_env.reset(key).obs)
    after = [jax.jit(e.step)(e.reset(key), zero).obs for e in (sim_env, real_env)]
    assert not np.allclose(after[0], after[1])  # half gravity: a different next state
    arrays = problem.prepared.arrays
    carry = o2o.init_carry(problem, key, 0, arrays)
    _, (out, _) = jax.jit(o2o.make_chunk(problem, 1))(carry, 0, arrays)
    for k in ("critic_loss", "d_sas_loss", "h2o_penalty", "sim_weight_mean", "eval_return"):
        assert np.isfinite(float(out[k][0])), k


def test_bad_hybrid_task_on_the_command_line(tmp_path):
    from test_o2o import run_cli

    out = run_cli("run", "h2o", "hopper-medium@sim:wind=2", "--mode", "hybrid",
                  "--root", str(tmp_path), "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "bad hybrid task" in out.stderr and "unknown override 'wind'" in out.stderr
    out = run_cli("run", "iql", "hopper-medium@sim:gravity=0.5", "--root", str(tmp_path))
    assert out.returncode == 2 and "use --mode hybrid" in out.stderr, out.stderr[-2000:]


def test_sim_rows_bellman_error_is_weighted_by_the_gap_weights():
    """td_loss = sum over critics of [mean over real rows of (Q_i - y)^2 + mean over sim rows
    of w (Q_i - y)^2], w = clip(exp(-gap)) (H2O's sim2real_sac.py: real and sim MSEs added);
    Q from the numpy critics, y from SAC's target (same key)."""
    from offbench_baselines import sac

    from np_reference import np_critics

    cfg = h2o.Config(hidden=(16,), disc_hidden=(16,), cql_n_actions=2, orthogonal_init=False,
                     w_min=0.05, w_max=0.9)
    state = h2o.init(jax.random.PRNGKey(3), EnvSpec(3, 2), cfg)
    batch = mixed(jax.random.PRNGKey(4), n=16)
    key = jax.random.PRNGKey(5)
    gap = np.asarray(h2o.log_gap(state, batch.obs, batch.action, batch.next_obs), np.float64)
    w = np.clip(np.exp(-gap[16:]), 0.05, 0.9)
    assert not np.allclose(w, 1.0)
    y = np.asarray(sac.td_target(state, batch, key), np.float64)
    q = np_critics(state.critic, np.asarray(batch.obs, np.float64),
                   np.asarray(batch.action, np.float64))
    by_hand = (((q - y)[:, :16] ** 2).mean(-1) + (w * (q - y)[:, 16:] ** 2).mean(-1)).sum()
    _, info = h2o.critic_loss(state.critic, state, batch, key)
    np.testing.assert_allclose(float(info["td_loss"]), by_hand, rtol=1e-5)
    np.testing.assert_allclose(float(info["sim_weight_mean"]), w.mean(), rtol=1e-5)


def test_penalty_is_a_gap_weighted_soft_maximum_over_sim_pairs_minus_real_q():
    """penalty = alpha * sum over critics of clip(T log sum_sim exp((Q + log omega) / T)
    - mean_real Q),
    omega = u+ / sum u+, u+ = clip(gap, u_min, u_max) (H2O's code with use_variant False),
    computed in float64 numpy from the numpy critics."""
    from np_reference import np_critics

    cfg = h2o.Config(hidden=(16,), disc_hidden=(16,), orthogonal_init=False, cql_alpha=0.5,
                     cql_temp=0.7, u_min=1e-3, u_max=0.05, cql_clip_diff_min=-50.0)
    state = h2o.init(jax.random.PRNGKey(6), EnvSpec(3, 2), cfg)
    batch = mixed(jax.random.PRNGKey(7), n=16)
    gap = np.asarray(h2o.log_gap(state, batch.obs, batch.action, batch.next_obs), np.float64)
    u = np.clip(gap[16:], 1e-3, 0.05)
    assert len(np.unique(u)) > 2  # the weights differ between rows
    omega = u / u.sum()
    q = np_critics(state.critic, np.asarray(batch.obs, np.float64),
                   np.asarray(batch.action, np.float64))
    soft = 0.7 * np.log(np.exp((q[:, 16:] + np.log(omega)) / 0.7).sum(-1))
    by_hand = 0.5 * np.clip(soft - q[:, :16].mean(-1), -50.0, 1000.0).sum()
    _, info = h2o.critic_loss(state.critic, state, batch, jax.random.PRNGKey(8))
    np.testing.assert_allclose(float(info["h2o_penalty"]), by_hand, rtol=1e-5, atol=1e-6)


def test_h2o_defaults_are_the_authors():
    cfg = h2o.Config()
    assert cfg.hidden == (256, 256) and not cfg.orthogonal_init
    assert (cfg.actor_lr, cfg.critic_lr, cfg.temperature_lr) == (3e-4, 3e-4, 3e-4)
    assert cfg.cql_alpha == 0.01 and cfg.target_entropy == 0.0 and not cfg.backup_entropy
    assert (cfg.w_min, cfg.w_max, cfg.u_max) == (1e-5, 1.0, 10.0)
    assert (cfg.cql_clip_diff_min, cfg.cql_clip_diff_max) == (-1000.0, 1000.0)
