"""O2O and hybrid modes: batch composition at any offline ratio (alone and inside the hybrid
loop with RLPD), derived fields of env transitions against the loader's, O2O metrics on
constructed curves, vmapped seeds equal seeds alone, a run killed in the middle of its online
phase resumes bit for bit, and bad input is one clear error."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from offbench import metrics, policies
from offbench.algorithms import Transition
from offbench.data.loader import mc_returns, next_actions
from offbench.loops import o2o, offline, online, replay
from offbench_baselines import rebrac, rlpd

from conftest import TINY_DATASET, comparable_metrics, run_cli_killed

OFFBENCH = str(Path(sys.executable).parent / "offbench")
DATASET = TINY_DATASET
RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


# --- batch composition -----------------------------------------------------------------------

def marked_sources(batch_obs_dim=3, size=40):
    """Dataset transitions have obs = +1, replay ones obs = -1 (and their own field values), so
    a batch's rows tell their source."""
    ones = jnp.ones((size, batch_obs_dim))
    arrays = {"obs": ones, "action": ones[:, :2], "reward": jnp.ones(size),
              "next_obs": ones, "terminal": jnp.zeros(size)}
    buffer = replay.create(Transition(obs=jnp.zeros(batch_obs_dim), action=jnp.zeros(2),
                                      reward=jnp.zeros(()), next_obs=jnp.zeros(batch_obs_dim),
                                      terminal=jnp.zeros(())), 16)
    buffer = replay.add(buffer, Transition(obs=-jnp.ones((10, batch_obs_dim)),
                                           action=-jnp.ones((10, 2)), reward=-jnp.ones(10),
                                           next_obs=-jnp.ones((10, batch_obs_dim)),
                                           terminal=jnp.zeros(10)))
    return arrays, buffer


@pytest.mark.parametrize("ratio", RATIOS)
def test_mixed_batch_holds_the_requested_counts(ratio):
    arrays, buffer = marked_sources()
    n_offline = o2o.offline_count(256, ratio)
    assert n_offline == 256 * ratio  # exact for these ratios
    batch = jax.jit(o2o.mixed_sample, static_argnums=(3, 4))(
        arrays, buffer, jax.random.PRNGKey(0), 256, n_offline)
    obs = np.asarray(batch.obs)
    assert obs.shape == (256, 3)
    assert (obs[:, 0] == 1).sum() == n_offline and (obs[:, 0] == -1).sum() == 256 - n_offline
    # rows keep their fields together
    np.testing.assert_array_equal(np.asarray(batch.reward), obs[:, 0])
    np.testing.assert_array_equal(np.asarray(batch.action)[:, 0], obs[:, 0])


def test_rlpd_settings():
    cfg = rlpd.Config()
    assert (cfg.num_critics, cfg.num_target_critics, cfg.critic_layer_norm) == (10, 2, True)
    assert cfg.offline_ratio == 0.5 and cfg.utd == 20 and cfg.actor_q == "mean"
    state = rlpd.init(jax.random.PRNGKey(0), o2o.offline.EnvSpec(4, 6), cfg)
    assert state.config.target_entropy == -3.0  # -|A| / 2
    resolved = o2o.resolve(o2o.MixedConfig(mode="hybrid", offline_updates=0), cfg)
    assert resolved.offline_ratio == 0.5 and resolved.utd == 20


def test_rlpd_steps_its_actor_once_per_utd_updates():
    cfg = rlpd.Config(hidden=(8, 8), num_critics=3, utd=3, batch_size=16)
    state = rlpd.init(jax.random.PRNGKey(0), o2o.offline.EnvSpec(4, 2), cfg)
    batch = Transition(obs=jnp.ones((16, 4)), action=jnp.zeros((16, 2)), reward=jnp.ones(16),
                       next_obs=jnp.ones((16, 4)), terminal=jnp.zeros(16))
    update = jax.jit(rlpd.update)
    actors = [state.actor]
    for i in range(6):
        state, info = update(state, batch, jax.random.PRNGKey(i))
        actors.append(state.actor)
        assert np.isfinite(float(info["critic_loss"]))
        assert np.isfinite(float(info["actor_loss"])) == (i % 3 == 2)
    changed = [not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(x),
                                                            jax.tree.leaves(y), strict=True))
               for x, y in zip(actors, actors[1:], strict=False)]
    assert changed == [False, False, True, False, False, True]


class Probe:
    """RLPD, reporting how many rows of each minibatch came from the dataset (reward 1000:
    env rewards of hopper are never near it)."""

    MODES = ("hybrid",)
    SKIPS_METRICS = rlpd.SKIPS_METRICS  # its actor's metrics are NaN between its steps
    Config = rlpd.Config
    init = staticmethod(rlpd.init)
    act = staticmethod(rlpd.act)

    @staticmethod
    def update(state, batch, key):
        state, info = rlpd.update(state, batch, key)
        return state, {**info, "offline_rows": jnp.sum(batch.reward > 500.0).astype(jnp.float32)}


def synthetic_prepared(obs_size=11, action_size=3, size=64):
    rng = np.random.default_rng(0)
    arrays = {"obs": rng.normal(size=(size, obs_size)),
              "action": rng.uniform(-1, 1, (size, action_size)),
              "reward": np.full(size, 1000.0), "next_obs": rng.normal(size=(size, obs_size)),
              "terminal": np.zeros(size)}
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
    return offline.Prepared(arrays, np.zeros(obs_size, np.float32), np.ones(obs_size, np.float32),
                            1.0, 0.0)


@pytest.mark.parametrize("ratio", RATIOS)
def test_hybrid_loop_feeds_rlpd_the_requested_counts(ratio):
    """Inside the compiled hybrid loop, every one of RLPD's updates gets exactly
    round(ratio * batch) dataset rows (the period's mean of the count equals it exactly)."""
    algo = types.SimpleNamespace(**{k: getattr(Probe, k) for k in
                                    ("MODES", "SKIPS_METRICS", "Config", "init", "act",
                                              "update")})
    algo_config = rlpd.Config(hidden=(8,), num_critics=2, batch_size=8, utd=2,
                              offline_ratio=ratio)
    config = o2o.resolve(o2o.MixedConfig(mode="hybrid", offline_updates=0, online_steps=8,
                                         eval_every=8, eval_episodes=1, episode_length=5,
                                         backend="mujoco"), algo_config)
    problem = o2o.Problem(algo, algo_config, "hopper", config, synthetic_prepared())
    arrays = problem.prepared.arrays
    carry = o2o.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
    _, (out, _) = jax.jit(o2o.make_chunk(problem, 1))(carry, 0, arrays)
    assert float(out["offline_rows"][0]) == 8 * ratio
    assert float(out["updates"][0]) == 16 and float(out["env_steps"][0]) == 8


# --- derived fields of env transitions ------------------------------------------------------

def test_env_transitions_get_the_loaders_mc_returns_and_next_actions():
    """Two envs stepped together, episodes of lengths (3, 4) and (5, then 2 steps unfinished):
    finished episodes get the loader's MC returns and next actions, unfinished ones no bound."""
    n, gamma = 2, 0.9
    lengths = [[3, 4], [5, 2]]
    steps = 7
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(steps, n)).astype(np.float32)
    actions = rng.uniform(-1, 1, (steps, n, 2)).astype(np.float32)
    done = np.zeros((steps, n), np.float32)
    for i, ls in enumerate(lengths):
        for end in np.cumsum(ls[:1] if i else ls) - 1:
            done[end, i] = 1.0
    example = Transition(obs=jnp.zeros(1), action=jnp.zeros(2), reward=jnp.zeros(()),
                         next_obs=jnp.zeros(1), terminal=jnp.zeros(()),
                         extra={"mc_returns": jnp.zeros(()), "next_actions": jnp.zeros(2)})
    buffer = replay.create(example, 32)
    previous_done = jnp.zeros(n)
    episode_steps = jnp.zeros(n, jnp.int32)
    for t in range(steps):
        buffer = online.fill_next_actions(buffer, jnp.asarray(actions[t]), previous_done, n)
        buffer = replay.add(buffer, Transition(
            obs=jnp.zeros((n, 1)), action=jnp.asarray(actions[t]), reward=jnp.asarray(rewards[t]),
            next_obs=jnp.zeros((n, 1)), terminal=jnp.zeros(n),
            extra={"mc_returns": jnp.full(n, online.MC_PENDING),
                   "next_actions": jnp.asarray(actions[t])}))
        episode_steps = episode_steps + 1
        buffer = online.fill_mc_returns(buffer, jnp.asarray(done[t]), episode_steps, gamma, 16)
        episode_steps = jnp.where(done[t] > 0, 0, episode_steps)
        previous_done = jnp.asarray(done[t])
    data = jax.tree.map(np.asarray, buffer.data)
    for i, ls in enumerate(lengths):
        slots = np.arange(steps) * n + i
        mc = data.extra["mc_returns"][slots]
        nxt = data.extra["next_actions"][slots]
        finished = sum(ls) if i == 0 else ls[0]
        np.testing.assert_allclose(mc[:finished], mc_returns(rewards[:finished, i],
                                                             np.array(ls[:len(ls) - i]), gamma),
                                   rtol=1e-6)
        assert np.isneginf(mc[finished:]).all()  # episode not over: return unknown, no bound
        expected = next_actions(actions[:, i], np.array([*ls[:len(ls) - i], steps - finished]))
        np.testing.assert_array_equal(nxt[:steps - 1], expected[:steps - 1])


# --- metrics ---------------------------------------------------------------------------------

def test_o2o_metrics_on_a_constructed_curve():
    pre = [10.0, 40.0, 50.0]
    steps = np.arange(1, 11) * 100  # budget 1000: the first 10% holds the evaluation at 100
    online_scores = np.array([30.0, 20.0, 45, 60, 70, 80, 90, 95, 100, 110])
    out = metrics.o2o_summary(pre, steps, online_scores, 1000)
    assert out["pretrain_score"] == 50.0 and out["final_score"] == 110.0
    assert out["dip"] == 30.0 and out["dip_drop"] == 20.0  # 20 comes after the first 10%
    regret = np.mean([0.7, 0.8, 0.55, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1])
    assert out["regret"] == pytest.approx(regret)
    out = metrics.o2o_summary(pre, np.arange(1, 21) * 50, np.r_[online_scores, online_scores],
                              1000)
    assert out["dip"] == 20.0  # evaluations at 50 and 100 steps are both in the first 10%
    # an evaluation period longer than 10% of the budget: the first online evaluation
    assert metrics.o2o_summary(pre, [500, 1000], [5.0, 1.0], 1000)["dip"] == 5.0


def test_o2o_metrics_from_raw_returns_use_the_tasks_reference_scores():
    ref_min, ref_max = policies.reference_scores("hopper")
    returns = ref_min + np.array([0.5, 0.25, 1.0]) * (ref_max - ref_min)  # 50, 25, 100
    out = metrics.o2o_summary([returns[0]], [100, 200], returns[1:], 1000, task="hopper")
    assert out["pretrain_score"] == pytest.approx(50.0)
    assert out["dip"] == pytest.approx(25.0) and out["final_score"] == pytest.approx(100.0)
    assert out["regret"] == pytest.approx((0.75 + 0.0) / 2)


def test_steps_to_threshold():
    steps, curve = [1000, 2000, 3000, 4000], [10.0, 55.0, 40.0, 80.0]
    assert metrics.steps_to_threshold(steps, curve, 50.0) == 2000
    assert metrics.steps_to_threshold(steps, curve, 80.0) == 4000
    assert metrics.steps_to_threshold(steps, curve, 81.0) is None


# --- whole runs ------------------------------------------------------------------------------

TINY = o2o.MixedConfig(mode="o2o", offline_updates=100, online_steps=150, eval_every=50,
                       eval_episodes=2, checkpoint_every=50, num_envs=2, episode_length=20,
                       backend="mujoco")
TINY_FLAGS = ["--mode", "o2o", "--offline-updates", "100", "--online-steps", "150",
              "--eval-every", "50", "--eval-episodes", "2", "--checkpoint-every", "50",
              "--num-envs", "2", "--episode-length", "20", "--backend", "mujoco",
              "--set", "hidden=32,32", "--set", "batch_size=32", "--set", "cql_n_actions=2"]




def test_o2o_vmapped_seeds_equal_seeds_run_alone(minari_root, tmp_path):
    """ReBRAC (which needs next actions, also for env transitions), 2 seeds together vs alone."""
    cfg = rebrac.Config(hidden=(32, 32), batch_size=32)
    together = o2o.train("rebrac", DATASET, 2, TINY, cfg, tmp_path / "both", progress=False)
    assert list(together[together.seed == 0].phase) == ["offline"] * 2 + ["online"] * 3
    first = together[together.seed == 0]
    # online: 50 env steps per period = 25 iterations of 2 envs, x utd 1
    assert list(first.updates) == [50, 100, 125, 150, 175]
    assert list(first.env_steps) == [0, 0, 50, 100, 150]
    assert np.isfinite(together.normalized_score).all()
    for seed in (0, 1):
        alone = o2o.train("rebrac", DATASET, 1, TINY, cfg, tmp_path / f"s{seed}",
                          first_seed=seed, progress=False)
        pd.testing.assert_frame_equal(comparable_metrics(alone),
                                      comparable_metrics(together[together.seed == seed]),
                                      rtol=1e-4, atol=1e-4)
    info = json.loads((tmp_path / "both" / "run.json").read_text())
    assert info["mode"] == "o2o" and info["mixed_config"]["offline_ratio"] == 0.5
    seed0 = info["per_seed"]["0"]
    expected = metrics.o2o_summary(first.normalized_score[:2], first.env_steps[2:],
                                   first.normalized_score[2:], 150)
    for k, v in expected.items():
        assert seed0[k] == pytest.approx(v)


# the O2O algorithms without a test of their own through the loop (ReBRAC above; Cal-QL, IQL,
# SPOT, WSRL in their modules' tests and test_harness; EDAC's loop code is SAC-N's):
# pre-train, switch, fine-tune
FINE_TUNED = {
    "awac": {},
    "cql": {"cql_n_actions": 2},
    "td3_bc": {},
    "edac": {"num_critics": 3},
}


@pytest.mark.parametrize("name", sorted(FINE_TUNED))
def test_offline_algorithms_fine_tune_through_the_switch(name, minari_root, tmp_path):
    from offbench.algorithms import load_algorithm

    algo = load_algorithm(name)
    cfg = algo.Config(hidden=(16, 16), batch_size=16, **FINE_TUNED[name])
    df = o2o.train(name, DATASET, 1, TINY, cfg, tmp_path / name, progress=False)
    assert list(df.phase) == ["offline"] * 2 + ["online"] * 3
    assert list(df.env_steps) == [0, 0, 50, 100, 150]
    assert (df.diverged == 0).all() and np.isfinite(df.normalized_score).all()
    online_rows = df[df.phase == "online"]
    losses = [c for c in df.columns if c.endswith("critic_loss")]
    assert losses and np.isfinite(online_rows[losses].to_numpy()).all()  # updates ran online


def test_online_view_tells_fine_tuning_its_budget():
    # ReBRAC's penalties decay over the online updates: the loop passes where they start
    # (after the offline updates) and how many there are: 150 env steps, the first 30 random
    # warm-up, in iterations of 2 envs -> 60 iterations of 3 updates
    from offbench_baselines import spot

    config = dataclasses.replace(TINY, utd=3, warmup_steps=30)
    view = o2o.online_view(rebrac, config)
    assert view.update.func is rebrac.online_update
    assert view.update.keywords == {"online_start": 100, "online_updates": 180}
    assert view.act is rebrac.act
    assert o2o.online_view(spot, config).update is spot.online_update  # takes no budget
    assert o2o.online_view(rlpd, config) is rlpd  # no fine-tuning of its own


def test_published_fine_tuning_settings_apply_to_o2o_runs_only():
    from offbench_baselines import iql

    base = iql.Config()
    assert base.actor_lr_schedule != "constant"
    assert o2o.fine_tuning_config(iql, base, "o2o").actor_lr_schedule == "constant"
    assert o2o.fine_tuning_config(iql, base, "hybrid") == base
    given = dataclasses.replace(base, actor_lr_schedule="cosine")  # the user's --set wins
    assert o2o.fine_tuning_config(iql, given, "o2o", {"actor_lr_schedule"}) == given


def run_cli(*args, env=None):
    return subprocess.run([OFFBENCH, *args], capture_output=True, text=True, timeout=900,
                          env=env)


def test_resume_in_the_online_phase_equals_uninterrupted_run(minari_root, tmp_path):
    """Cal-QL (MC returns filled for env transitions), killed after its first online period."""
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    base = ["run", "cal_ql", DATASET, "--seeds", "2", *TINY_FLAGS]
    full = run_cli(*base, "--out", str(tmp_path / "full"), env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "pretrain_score" in full.stdout
    # a progress line per evaluation period, counting each phase in its own units
    progress = [re.search(r"\): (.*?): score", line).group(1)
                for line in full.stdout.splitlines() if line.startswith("    cal_ql on ")]
    assert progress == ["offline updates 50/100 (20%)", "offline updates 100/100 (40%)",
                        "online env steps 50/150 (60%)", "online env steps 100/150 (80%)",
                        "online env steps 150/150 (100%)"], full.stdout
    killed = run_cli_killed([*base, "--out", str(tmp_path / "killed")], after_chunks=3,
                            env=env)
    assert killed.returncode == 17, killed.stderr[-3000:]
    partial = pd.read_csv(tmp_path / "killed" / "metrics.csv")
    assert list(partial[partial.seed == 0].phase) == ["offline", "offline", "online"]
    resumed = run_cli(*base, "--out", str(tmp_path / "killed"), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = comparable_metrics(pd.read_csv(tmp_path / "full" / "metrics.csv"))
    b = comparable_metrics(pd.read_csv(tmp_path / "killed" / "metrics.csv"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.isfinite(a.calql_bound_rate).all()


@pytest.mark.parametrize("args,message", [
    (["run", "cal_ql", "hopper-medium", "--mode", "o2o", "--offline-ratio", "1.5"],
     r"offline ratio must be in \[0, 1\], got 1.5"),
    (["run", "rlpd", "hopper-medium", "--mode", "hybrid", "--offline-ratio", "-0.1"],
     r"offline ratio must be in \[0, 1\], got -0.1"),
    (["run", "bc", "hopper-medium", "--mode", "o2o"],
     r"algorithm 'bc' does not support mode 'o2o' \(its modes: \['offline'\]\)"),
    (["run", "rlpd", "hopper-medium", "--mode", "o2o"], "does not support mode 'o2o'"),
    (["run", "iql", "hopper-medium", "--mode", "hybrid"], "does not support mode 'hybrid'"),
    (["run", "rlpd", "hopper-medium", "--mode", "hybrid", "--offline-updates", "100"],
     "hybrid mode trains from scratch"),
    (["run", "iql", "hopper-medium", "--offline-ratio", "0.5"],
     "--offline-ratio only apply with --mode o2o or hybrid"),
])
def test_bad_input_is_one_clear_error(args, message, tmp_path):
    out = run_cli(*args, "--root", str(tmp_path), "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "run").exists()


def test_bad_ratio_in_the_api_is_refused():
    with pytest.raises(ValueError, match=r"offline ratio must be in \[0, 1\]"):
        o2o.resolve(dataclasses.replace(TINY, offline_ratio=float("nan")), rebrac.Config())


def test_a_seed_diverging_online_is_frozen_and_flagged():
    """ReBRAC whose actor turns NaN at its 60th update, the 10th of the online phase: the seed
    keeps its last finite state, is flagged at that update, and still gets a real score."""
    def poisoned_update(state, batch, key):
        state, info = rebrac.update(state, batch, key)
        actor = jax.tree.map(lambda x: jnp.where(state.steps == 60, jnp.nan, x), state.actor)
        return state.replace(actor=actor), info

    algo_config = rebrac.Config(hidden=(16,), batch_size=8)
    prepared = synthetic_prepared()
    prepared.arrays["next_actions"] = prepared.arrays["action"]
    config = o2o.resolve(o2o.MixedConfig(mode="o2o", offline_updates=50, online_steps=40,
                                         eval_every=10, eval_episodes=1, episode_length=5,
                                         backend="mujoco"), algo_config)
    outs = {}
    for name, update in (("clean", rebrac.update), ("poisoned", poisoned_update)):
        algo = types.SimpleNamespace(MODES=("o2o",), Config=rebrac.Config, init=rebrac.init,
                                     act=rebrac.act, update=update)
        problem = o2o.Problem(algo, algo_config, "hopper", config, prepared)
        arrays = problem.prepared.arrays
        carry = o2o.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
        carry, (out, _) = jax.jit(o2o.make_chunk(problem, 9))(carry, 0, arrays)
        outs[name] = (carry, jax.tree.map(np.asarray, out))
    carry, out = outs["poisoned"]
    assert list(out["diverged"]) == [0.0] * 5 + [1.0] * 4  # 5 offline, 4 online periods
    assert (out["diverged_at"][5:] == 59).all()  # updates before the poisoned one
    assert np.isfinite(out["eval_return"]).all()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(carry.algo))
    clean = outs["clean"][1]
    np.testing.assert_allclose(clean["eval_return"][:5], out["eval_return"][:5], rtol=1e-6)
    assert (clean["diverged"] == 0).all()


def test_hybrid_run_from_the_command_line(minari_root, tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    out = run_cli("run", "rlpd", DATASET, "--mode", "hybrid", "--online-steps", "40",
                  "--eval-every", "20", "--eval-episodes", "1", "--episode-length", "10",
                  "--backend", "mujoco", "--utd", "2", "--offline-ratio", "0.25",
                  "--threshold", "-1000", "--set", "hidden=16", "--set", "num_critics=2",
                  "--set", "batch_size=8", "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(df.phase) == ["online", "online"] and list(df.env_steps) == [20, 40]
    # both periods are in one checkpoint chunk (50,000 steps by default): a line for each
    progress = [line for line in out.stdout.splitlines() if line.startswith("    rlpd on ")]
    assert len(progress) == 2, out.stdout
    assert ": env steps 20/40 (50%): score" in progress[0] and ", ETA " in progress[0]
    assert ": env steps 40/40 (100%): score" in progress[1] and "ETA" not in progress[1]
    assert list(df.updates) == [40, 80]  # utd 2
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["mode"] == "hybrid" and info["algo_config"]["utd"] == 2
    assert info["mixed_config"]["offline_ratio"] == 0.25
    assert info["per_seed"]["0"]["steps_to_threshold"] == 20  # any score beats -1000
