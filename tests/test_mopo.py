"""MOPO and its dynamics ensemble against independent references: the ensemble's Gaussian NLL
and MOPO's penalized reward against float64 numpy written from the equations
(offbench/models/ensemble.py, baselines/mopo.py docstrings), the ensemble learning a known
function, the model buffer keeping only valid rollout rows, `offbench check` and a tiny
`offbench run mopo`."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import struct

from offbench import cli
from offbench.algorithms import Transition, contract
from offbench.loops import offline
from offbench.models import ensemble, rollouts
from offbench_baselines import mobile, mopo

from conftest import TINY_DATASET

SMALL = ensemble.EnsembleConfig(members=3, elites=2, hidden=(16, 16),
                                weight_decay=(1e-2, 2e-2, 3e-2), max_epochs=3)
TINY_OVERRIDES = ["hidden=16,16", "model_hidden=16,16", "model_weight_decay=1e-5,1e-5,1e-5",
                  "model_members=3", "model_elites=2", "model_max_epochs=2",
                  "rollout_batch_size=200", "rollout_freq=10", "rollout_length=2",
                  "batch_size=64"]


# ---- float64 references ------------------------------------------------------------------

def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_ensemble(params, x):
    """Mean and clamped log-variance of every member: swish MLPs with per-member kernels."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    layers = sorted((k for k in p if k.startswith("EnsembleDense_")), key=lambda k: int(k[14:]))
    h = np.broadcast_to(x, (p[layers[0]]["kernel"].shape[0], *x.shape)) if x.ndim == 2 else x
    for i, name in enumerate(layers):
        h = np.einsum("ebi,eio->ebo", h, p[name]["kernel"]) + p[name]["bias"]
        if i < len(layers) - 1:
            h = h / (1.0 + np.exp(-h))  # swish
    mean, raw = np.split(h, 2, axis=-1)
    hi, lo = p["max_logvar"], p["min_logvar"]
    logvar = hi - np_softplus(hi - raw)
    return mean, lo + np_softplus(logvar - lo)


def np_nll(params, x, y, weight_decay, coef=0.01):
    """sum_e mean_{b,d} [(mu - y)^2 / var + log var] + sum_l wd_l/2 ||W_l||^2
    + coef (sum max_lv - sum min_lv)."""
    mean, logvar = np_ensemble(params, x)
    nll = sum(np.mean((mean[e] - y[e]) ** 2 / np.exp(logvar[e]) + logvar[e])
              for e in range(mean.shape[0]))
    p = params["params"]
    decay = sum(wd / 2 * np.sum(np.asarray(p[f"EnsembleDense_{i}"]["kernel"], np.float64) ** 2)
                for i, wd in enumerate(weight_decay))
    bounds = coef * (np.sum(np.asarray(p["max_logvar"], np.float64))
                     - np.sum(np.asarray(p["min_logvar"], np.float64)))
    return nll + decay + bounds


def small_model(seed=0):
    """An ensemble (obs 4, action 2) with random parameters and standardization."""
    rng = np.random.default_rng(seed)
    params = ensemble.network(SMALL, 4).init(jax.random.PRNGKey(seed), jnp.zeros((1, 6)))
    params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.normal(size=a.shape), a.dtype),
                          params)  # biases and bounds off their initial values
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return ensemble.ModelState(params=params, in_mean=f(6), in_std=1 + jnp.abs(f(6)),
                               out_mean=f(5), out_std=1 + jnp.abs(f(5)),
                               elites=jnp.asarray([2, 0]), holdout_mse=jnp.zeros(()),
                               holdout_losses=jnp.zeros(3), epochs=jnp.zeros((), jnp.int32),
                               config=SMALL)


def test_nll_loss_matches_numpy():
    model = small_model()
    net = ensemble.network(SMALL, 4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 32, 6)).astype(np.float32)
    y = rng.normal(size=(3, 32, 5)).astype(np.float32)
    # bounds moved off their initial values, so the clamp and its terms matter
    params = {"params": dict(model.params["params"])}
    params["params"]["max_logvar"] = jnp.linspace(-0.5, 0.5, 5)
    params["params"]["min_logvar"] = jnp.linspace(-3.0, -1.0, 5)
    loss, _ = ensemble.nll_loss(params, net, jnp.asarray(x), jnp.asarray(y), SMALL)
    expected = np_nll(params, x.astype(np.float64), y.astype(np.float64), SMALL.weight_decay)
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
    # the log-variance stays inside its soft bounds
    _, logvar = np_ensemble(params, x.astype(np.float64))
    assert (logvar < 0.5 + 1e-6).all() and (logvar > -3.0 - 1e-6).all()


def test_mopo_penalty_matches_numpy():
    # by hand: member norms 5 and sqrt(2) -> u = 5; r~ = 1 - 0.5 * 5
    stds = jnp.asarray([[[3.0, 4.0]], [[1.0, 1.0]]])
    np.testing.assert_allclose(ensemble.max_std_norm(stds), [5.0])
    np.testing.assert_allclose(mopo.penalized(0.5)(jnp.asarray([1.0]), None, stds), [-1.5])
    # against the numpy ensemble, in the data's units
    model = small_model()
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(16, 4)).astype(np.float32)
    action = rng.uniform(-1, 1, (16, 2)).astype(np.float32)
    x = (np.concatenate([obs, action], -1) - np.asarray(model.in_mean, np.float64)) \
        / np.asarray(model.in_std, np.float64)
    mean, logvar = np_ensemble(model.params, x)
    std = np.exp(0.5 * logvar) * np.asarray(model.out_std, np.float64)
    u = np.max(np.sqrt(np.sum(std ** 2, axis=-1)), axis=0)
    reward = rng.normal(size=16)
    got_mean, got_std = ensemble.predict(model, jnp.asarray(obs), jnp.asarray(action))
    np.testing.assert_allclose(got_mean, mean * np.asarray(model.out_std, np.float64)
                               + np.asarray(model.out_mean, np.float64), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mopo.penalized(2.5)(jnp.asarray(reward, jnp.float32), got_mean,
                                                   got_std), reward - 2.5 * u, rtol=1e-5,
                               atol=1e-5)
    assert u.min() > 0.1  # the penalty is not trivially zero here


def test_ensemble_learns_a_known_function():
    """s' = s + 0.5 sin(2 s) + 0.3 a (per dimension), r = sum(s) - |a|^2, small noise: the
    elites' holdout MSE falls below 5% of the targets' variance (and far below the untrained
    model's)."""
    rng = np.random.default_rng(0)
    n = 2000
    obs = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    action = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    next_obs = obs + 0.5 * np.sin(2 * obs) + 0.3 * action + 0.01 * rng.normal(size=(n, 3))
    reward = obs.sum(-1) - (action ** 2).sum(-1) + 0.01 * rng.normal(size=n)
    targets = np.concatenate([next_obs - obs, reward[:, None]], -1)
    args = [jnp.asarray(a, jnp.float32) for a in (obs, action, reward, next_obs)]
    config = ensemble.EnsembleConfig(members=3, elites=2, hidden=(64, 64),
                                     weight_decay=(2.5e-5, 5e-5, 1e-4), max_epochs=40)
    model = jax.jit(lambda k, *a: ensemble.fit(k, *a, config))(jax.random.PRNGKey(0), *args)
    untrained = jax.jit(lambda k, *a: ensemble.fit(k, *a, dataclasses.replace(
        config, lr=1e-12, max_epochs=1)))(jax.random.PRNGKey(0), *args)
    threshold = 0.05 * targets.var(0).mean()
    assert float(model.holdout_mse) < threshold, (float(model.holdout_mse), threshold)
    assert float(untrained.holdout_mse) > 10 * float(model.holdout_mse)
    assert model.elites.shape == (2,) and int(model.epochs) >= 1


def test_model_buffer_keeps_only_valid_rows():
    buffer = rollouts.empty(capacity=12, obs_size=1, action_size=1)
    for start in (0, 10, 20):  # values tag the rows; odd ones invalid
        v = jnp.arange(start, start + 6, dtype=jnp.float32)
        rows = Transition(v[:, None], v[:, None], v, v[:, None], jnp.zeros(6))
        buffer = rollouts.add(buffer, rows, (jnp.arange(6) % 2) == 0)
    assert int(buffer.size) == 6  # capacity 12 - 6 rows per call
    got = set(np.asarray(rollouts.sample(buffer, jax.random.PRNGKey(0), 200).reward).tolist())
    assert got == {10.0, 12.0, 14.0, 20.0, 22.0, 24.0}  # the newest valid rows only


def test_termination_rules():
    hopper = jnp.asarray([[1.2, 0.0, 0.0], [0.6, 0.0, 0.0], [1.2, 0.3, 0.0], [1.2, 0.0, -200.]])
    code = rollouts.termination_code("auto", jnp.zeros((1, 11)))
    assert rollouts.TERMINATIONS[int(code)] == "hopper"
    np.testing.assert_array_equal(rollouts.terminal(code, hopper), [False, True, True, True])
    walker = jnp.full((10, 17), 0.1).at[:, 0].set(1.25)
    assert rollouts.TERMINATIONS[int(rollouts.termination_code("auto", walker))] == "walker2d"
    cheetah = jnp.full((10, 17), 0.1).at[:, 0].set(-0.05)
    assert rollouts.TERMINATIONS[int(rollouts.termination_code("auto", cheetah))] == \
        "halfcheetah"


@pytest.mark.parametrize("dynamics", ["learned", "true"])
def test_mopo_keeps_the_contract(dynamics):
    """With true dynamics too: `offbench check` names its hopper-sized problem's task, so the
    rollouts step hopper's env from the synthetic observations."""
    from offbench.harness.check import check

    lines = []
    assert check("mopo", [*TINY_OVERRIDES, f"dynamics={dynamics}"], updates=2,
                 log=lines.append), "\n".join(lines)
    if dynamics == "true":
        assert "ok    offline mode" in "\n".join(lines)


def test_offbench_run_mopo(minari_root, tmp_path, capsys):
    flags = ["--updates", "40", "--eval-every", "20", "--eval-episodes", "2",
             "--checkpoint-every", "40", "--episode-length", "20", "--backend", "mujoco"]
    sets = [x for o in TINY_OVERRIDES for x in ("--set", o)]
    out = tmp_path / "run"
    assert cli.main(["run", "mopo", TINY_DATASET, "--seeds", "2", *flags, *sets,
                     "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 4 and np.isfinite(metrics.model_holdout_mse).all()
    assert (metrics.model_buffer_rows > 0).all() and not metrics.diverged.any()


class _GuardState(struct.PyTreeNode):
    params: jax.Array
    buffer: jax.Array


def _ops_on(jaxpr, shape) -> set[str]:
    """Names of the primitives of `jaxpr` (inner jaxprs, e.g. jnp.where's pjit, included) with
    an operand of `shape`."""
    names = set()
    for eqn in jaxpr.eqns:
        if any(getattr(v.aval, "shape", None) == shape for v in eqn.invars):
            names.add(eqn.primitive.name)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                names |= _ops_on(inner, shape)
    return names


def test_divergence_guard_skips_the_model_buffer():
    """The offline loop's guard with MOPO's UNGUARDED_STATE: a NaN in a guarded field still
    flags the seed and rolls that field back; the buffer is neither checked (a NaN there does
    not flag the seed) nor selected/copied (no isfinite or select on its shape in the program),
    and always takes the update's value. Without the declaration (the old guard) both happen."""
    assert contract(mopo).unguarded_state == ("buffer",)
    assert contract(mobile).unguarded_state == ("buffer",)
    shape = (97, 5)
    old = _GuardState(params=jnp.ones(3), buffer=jnp.zeros(shape))
    carry = offline.Carry(algo=old, key=jax.random.PRNGKey(0), seed_index=jnp.asarray(0),
                          diverged=jnp.asarray(False), diverged_at=jnp.asarray(-1, jnp.int32))
    metrics = {"loss": jnp.asarray(1.0)}
    step = jnp.asarray(7)
    bad_buffer = _GuardState(params=2 * jnp.ones(3), buffer=jnp.full(shape, jnp.nan))
    bad_params = _GuardState(params=jnp.full(3, jnp.nan), buffer=jnp.full(shape, 5.0))

    out, m = offline.keep_if_finite(carry, bad_buffer, metrics, step, ("buffer",))
    assert not bool(out.diverged) and float(m["loss"]) == 1.0
    np.testing.assert_array_equal(out.algo.params, 2.0)
    assert np.isnan(np.asarray(out.algo.buffer)).all()
    out, m = offline.keep_if_finite(carry, bad_params, metrics, step, ("buffer",))
    assert bool(out.diverged) and int(out.diverged_at) == 7 and np.isnan(float(m["loss"]))
    np.testing.assert_array_equal(out.algo.params, 1.0)  # rolled back
    np.testing.assert_array_equal(out.algo.buffer, 5.0)  # not rolled back
    # the old guard: the buffer's NaN flags the seed
    out, _ = offline.keep_if_finite(carry, bad_buffer, metrics, step)
    assert bool(out.diverged)

    def program(unguarded):
        return jax.make_jaxpr(lambda c, n: offline.keep_if_finite(c, n, metrics, step,
                                                                  unguarded))(carry, bad_params)
    assert {"is_finite", "select_n"} <= _ops_on(program(()).jaxpr, shape)
    assert not _ops_on(program(("buffer",)).jaxpr, shape) & {"is_finite", "select_n"}


def test_true_dynamics_step_reproduces_the_dataset():
    """The oracle: a physics state rebuilt from a dataset observation (rollouts.physics_from_obs)
    stepped by the task's env with the dataset's action gives the dataset's next observation
    (exactly) and reward (to float32 rounding of the root x the rebuild sets to 0), on every
    row whose observed velocities are not clipped (all of halfcheetah's; Hopper and Walker2d
    clip at 10, and there the rebuilt state is one with that observation)."""
    from offbench.data import builder, loader

    for task in ("halfcheetah", "hopper", "walker2d"):
        episodes, _ = builder.generate(task, "random", 600, seed=1, log=lambda *_: None)
        flat = loader.flatten(episodes)
        env = rollouts.true_env(task, "mujoco")
        obs = jnp.asarray(flat["observations"])
        physics = rollouts.physics_from_obs(env, obs)
        np.testing.assert_array_equal(jax.vmap(env.observation)(physics), obs)
        _, next_obs, reward, done = jax.jit(functools.partial(rollouts.env_step, env))(
            physics, jnp.asarray(flat["actions"]))
        nq = env.model.nq
        exact = (np.abs(flat["observations"][:, nq - 1:]) < 10).all(1) | (task == "halfcheetah")
        assert exact.sum() >= 100, (task, exact.sum())
        np.testing.assert_array_equal(np.asarray(next_obs)[exact],
                                      flat["next_observations"][exact])
        np.testing.assert_allclose(np.asarray(reward)[exact], flat["rewards"][exact],
                                   atol=1e-5)
        np.testing.assert_array_equal(np.asarray(done)[exact], flat["terminals"][exact])
    with pytest.raises(ValueError, match="planar"):
        rollouts.true_env("ant", "mujoco")


def test_offbench_run_mopo_true_dynamics(minari_root, tmp_path):
    """`--set dynamics=true`: no model is fitted (no holdout error in the metrics), rollouts
    come from the env and carry no penalty."""
    flags = ["--updates", "20", "--eval-every", "20", "--eval-episodes", "2",
             "--checkpoint-every", "20", "--episode-length", "20", "--backend", "mujoco"]
    sets = [x for o in [*TINY_OVERRIDES, "dynamics=true"] for x in ("--set", o)]
    out = tmp_path / "run"
    assert cli.main(["run", "mopo", TINY_DATASET, "--seeds", "2", *flags, *sets,
                     "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert "model_holdout_mse" not in metrics.columns
    assert (metrics.model_penalty == 0).all() and (metrics.model_buffer_rows > 0).all()
    assert np.isfinite(metrics.model_reward).all() and not metrics.diverged.any()


@pytest.mark.parametrize("name", ["mopo", "mobile"])
def test_full_profile_applies_the_per_dataset_settings(name):
    """The D4RL-scale profile runs each dataset with the module's (h, penalty) from SETTINGS,
    and the sweep resolves them into the cells' configs."""
    import tomllib
    from pathlib import Path

    from offbench.algorithms import load_algorithm
    from offbench.harness import sweep

    path = Path(__file__).parents[1] / "tasks/sweeps/full.toml"
    module = load_algorithm(name)
    per_dataset = tomllib.loads(path.read_text())["algorithms_set"][name]["datasets"]
    assert per_dataset == {k: [f"rollout_length={h}", f"penalty_coef={p}"]
                           for k, (h, p) in module.SETTINGS.items()}
    cells = [c.config for c in sweep.expand(sweep.load_spec(path), log=lambda *_: None)
             if c.config["algorithm"] == name]
    assert len(cells) == 24
    for c in cells:
        h, p = module.SETTINGS.get(c["dataset"], (module.Config().rollout_length,
                                                   module.Config().penalty_coef))
        assert (c["algo_config"]["rollout_length"], c["algo_config"]["penalty_coef"]) == (h, p)


@pytest.fixture(scope="module")
def physics_root(tmp_path_factory):
    """Small offbench-built random datasets, which carry their physics states: walker2d (whose
    observations clip velocities at 10 on most random rows) and ant (no rebuild possible)."""
    from offbench import data

    root = tmp_path_factory.mktemp("physics")
    for task in ("walker2d", "ant"):
        data.build(data.DatasetName(task, "random", 3000), root=root, log=lambda *_: None)
    return root


def test_true_dynamics_from_the_stored_physics_states(physics_root):
    """The stored start states (the loader's `physics`) stepped with the dataset's actions give
    the dataset's next observations exactly, its rewards to float32 round-off and its
    terminations, on every walker2d row, the clipped ones included, where the states rebuilt
    from observations do not (that is why they are stored). Ant, refused without them, is
    allowed with them: next observations to round-off; its reward differs by the main body's
    position initial_physics puts at qpos (declared, rollouts.py)."""
    from offbench.data import load

    step = {}
    for task in ("walker2d", "ant"):
        ds = load(f"{task}-random-3k", physics_root, derived=("physics",))
        env = rollouts.true_env(task, "mujoco", False)
        step[task] = jax.jit(functools.partial(rollouts.env_step, env))
        physics = rollouts.physics_from_dataset(env, jnp.asarray(ds.extra["physics"]))
        _, next_obs, reward, done = step[task](physics, jnp.asarray(ds.actions))
        next_obs, reward = np.asarray(next_obs), np.asarray(reward)
        np.testing.assert_array_equal(np.asarray(done), ds.terminals)
        if task == "ant":
            np.testing.assert_allclose(next_obs, ds.next_observations, atol=1e-6)
            assert np.median(np.abs(reward - ds.rewards)) < 1e-2
            with pytest.raises(ValueError, match="planar"):
                rollouts.true_env("ant", "mujoco")
            continue
        np.testing.assert_array_equal(next_obs, ds.next_observations)
        np.testing.assert_allclose(reward, ds.rewards, atol=1e-5)
        clipped = (np.abs(ds.observations[:, env.model.nq - 1:]) >= 10).any(1)
        assert clipped.sum() > 100
        rebuilt = rollouts.physics_from_obs(env, jnp.asarray(ds.observations))
        _, next_obs, reward, _ = step[task](rebuilt, jnp.asarray(ds.actions))
        wrong = (np.asarray(next_obs) != ds.next_observations).any(1)
        assert wrong[clipped].mean() > 0.9 and not wrong[~clipped].any()


def test_mopo_rolls_out_from_the_stored_physics(physics_root):
    """model_step with the start rows' stored states (as init and update pass them from the
    loop's arrays and batch.extra): each buffered first step is the env's step of the stored
    state with the buffered action (to float32 round-off), which the state rebuilt from the
    observation does not reproduce on walker2d's clipped rows: without `physics` model_step's
    rows are far from it there."""
    from offbench.algorithms import EnvSpec
    from offbench.data import load

    ds = load("walker2d-random-3k", physics_root, derived=("physics",))
    env = rollouts.true_env("walker2d", "mujoco", False)
    config = dataclasses.replace(mopo.Config(), hidden=(16, 16), dynamics="true",
                                 rollout_length=1, rollout_batch_size=200, rollout_freq=10,
                                 batch_size=64)
    spec = EnvSpec(env.observation_size, env.action_size, "walker2d", "mujoco")
    arrays = {"obs": ds.observations, "action": ds.actions, "reward": ds.rewards,
              "next_obs": ds.next_observations, "terminal": ds.terminals,
              "physics": ds.extra["physics"]}
    state = mopo.init(jax.random.PRNGKey(0), spec, config, arrays)
    rows = np.arange(0, 3000, 15)
    step = jax.jit(functools.partial(rollouts.env_step, env))
    for stored in (True, False):
        empty = state.replace(buffer=rollouts.empty(4000, env.observation_size,
                                                    env.action_size))
        out, _ = jax.jit(mopo.model_step, static_argnums=3)(
            empty, jnp.asarray(ds.observations[rows]), jax.random.PRNGKey(1), None,
            jnp.asarray(ds.extra["physics"][rows]) if stored else None)
        # one step each: every row valid (a terminal one too), written in order from row 0
        assert int(out.buffer.size) == len(rows)
        buf = jax.tree.map(lambda x: np.asarray(x[:len(rows)]), out.buffer.data)
        np.testing.assert_array_equal(buf.obs, ds.observations[rows])
        from_stored = rollouts.physics_from_dataset(env, jnp.asarray(ds.extra["physics"][rows]))
        _, expected, reward, _ = step(from_stored, jnp.asarray(buf.action))
        # to float32 round-off: the step inside model_step's program and this one round the
        # action map and the state's setup apart (XLA's fusions), ~1e-6
        error = np.abs(np.asarray(expected) - buf.next_obs).max(1)
        clipped = (np.abs(buf.obs[:, env.model.nq - 1:]) >= 10).any(1)
        assert clipped.sum() > 20
        if stored:
            assert error.max() < 1e-4
            np.testing.assert_allclose(np.asarray(reward), buf.reward, atol=1e-4)
        else:
            assert (error[clipped] > 1e-2).mean() > 0.9


def test_offbench_run_mopo_true_dynamics_on_stored_physics(physics_root, tmp_path, capsys):
    """End to end on a dataset that carries physics states: the loop asks for them with
    dynamics=true only (`physics` in the arrays minibatches come from, aligned with obs), the
    runs (ant too) do not say they rebuilt states from observations; for a variant the loop
    says so, once."""
    from offbench import envs

    fields = offline.load_dataset(mopo, mopo.Config(), "walker2d-random-3k", physics_root)
    assert "physics" not in fields.extra
    true = dataclasses.replace(mopo.Config(), dynamics="true")
    ds = offline.load_dataset(mopo, true, "walker2d-random-3k", physics_root)
    arrays = offline.prepare(mopo, true, ds).arrays
    env = envs.make("walker2d", wrap=False)
    nq = env.model.nq
    states = jax.vmap(env.initial_physics)(arrays["physics"][:, :nq], arrays["physics"][:, nq:])
    np.testing.assert_array_equal(jax.vmap(env.observation)(states), arrays["obs"])
    flags = ["--updates", "20", "--eval-every", "20", "--eval-episodes", "2",
             "--checkpoint-every", "20", "--episode-length", "20", "--backend", "mujoco",
             "--root", str(physics_root)]
    sets = [x for o in [*TINY_OVERRIDES, "dynamics=true"] for x in ("--set", o)]
    for dataset in ("walker2d-random-3k", "ant-random-3k"):
        capsys.readouterr()
        out = tmp_path / dataset
        assert cli.main(["run", "mopo", dataset, "--seeds", "1", *flags, *sets,
                         "--out", str(out)]) == 0
        assert "has no physics states" not in capsys.readouterr().err
        metrics = pd.read_csv(out / "metrics.csv")
        assert (metrics.model_buffer_rows > 0).all() and not metrics.diverged.any()
    variant = offline.load_dataset(mopo, true, "walker2d-random-3k+episodes=0.5", physics_root)
    assert "physics" not in variant.extra
    assert capsys.readouterr().err.count("has no physics states") == 1


def test_a_true_dynamics_cell_on_stored_physics_is_its_own_cell(physics_root, monkeypatch):
    """The stored states' hash is in a true-dynamics cell's identity (results from states
    rebuilt from observations, on the same transitions built before, are another cell); a
    learned-model cell, a variant's, and one on a dataset without them keep the config (and
    id) they had."""
    from offbench.harness import cells
    from offbench.harness.store import cell_name

    monkeypatch.setenv("OFFBENCH_DATASETS", str(physics_root))

    def resolve(dataset, dynamics):
        return cells.resolve("mopo", dataset, "offline", items=[f"dynamics={dynamics}"])

    true = resolve("walker2d-random-3k", "true")
    assert len(true["physics_sha256"]) > 8 and true["dataset_sha256"]
    assert "physics_sha256" not in resolve("walker2d-random-3k", "learned")
    assert "physics_sha256" not in resolve("walker2d-random-3k+episodes=0.5", "true")
    assert "physics_sha256" not in resolve("hopper-random-3k", "true")  # not built
    without = {k: v for k, v in true.items() if k != "physics_sha256"}
    assert cell_name(true) != cell_name(without)
