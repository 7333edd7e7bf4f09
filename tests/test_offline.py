"""The offline loop: vmapped seeds equal seeds alone, two devices equal one, a killed run
resumes bit for bit, an injected NaN freezes only its seed, and bad input is one clear error.
The dataset is a tiny random-action Minari dataset written here (no behaviour policies)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offbench.loops import offline
from offbench_baselines import bc, td3_bc

from conftest import TINY_DATASET, comparable_metrics, run_cli_killed

OFFBENCH = str(Path(sys.executable).parent / "offbench")
DATASET = TINY_DATASET
TINY = offline.OfflineConfig(updates=300, eval_every=100, eval_episodes=2, checkpoint_every=100,
                             episode_length=50, backend="mujoco")
TINY_BC = bc.Config(hidden=(32, 32), batch_size=64)
TINY_FLAGS = ["--updates", "300", "--eval-every", "100", "--eval-episodes", "2",
              "--checkpoint-every", "100", "--episode-length", "50", "--backend", "mujoco",
              "--set", "hidden=32,32", "--set", "batch_size=64"]




# BC's update draws no random numbers; TD3+BC's does (target-policy noise), so it also shows
# that each vmapped seed gets its own key stream, the same as when it runs alone.
@pytest.mark.parametrize("name,algo_config", [
    ("bc", TINY_BC), ("td3_bc", td3_bc.Config(hidden=(32, 32), batch_size=64))])
def test_vmapped_seeds_equal_seeds_run_alone(minari_root, tmp_path, name, algo_config):
    together = offline.train(name, DATASET, 2, TINY, algo_config, tmp_path / "both",
                             progress=False)
    assert set(together.updates) == {100, 200, 300}
    assert np.isfinite(together.normalized_score).all()
    for seed in (0, 1):
        alone = offline.train(name, DATASET, 1, TINY, algo_config, tmp_path / f"s{seed}",
                              first_seed=seed, progress=False)
        mine = comparable_metrics(together[together.seed == seed])
        pd.testing.assert_frame_equal(comparable_metrics(alone), mine, rtol=1e-4, atol=1e-4)
    # the seeds really differ (else equality above would say nothing about per-seed keys)
    assert not np.allclose(together[together.seed == 0].eval_return,
                           together[together.seed == 1].eval_return)
    info = json.loads((tmp_path / "both" / "run.json").read_text())
    assert set(info["per_seed"]) == {"0", "1"} and info["mode"] == "offline"
    for seed in (0, 1):  # the last and the best periodic evaluation of each seed
        scores = together[together.seed == seed].sort_values("period").normalized_score
        assert info["per_seed"][str(seed)]["last_periodic_score"] == pytest.approx(
            scores.iloc[-1])
        assert info["per_seed"][str(seed)]["best_score"] == pytest.approx(scores.max())
    # the run record (issue 5): config, versions, commit, device, wall and compile time
    assert info["algo_config"]["hidden"] == [32, 32] and info["offline_config"]["updates"] == 300
    assert {"jax", "mujoco", "flax", "optax"} <= set(info["versions"])
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", info["git_commit"])
    assert info["machine"]["jax_backend"] == "cpu" and info["seed_devices"] == 1
    assert info["wall_s"] > info["compile_s"] > 0


def nan_batch(seed_index: int, at: int):
    """A fault for offline.Problem: the minibatch of seed `seed_index` at update `at` is NaN."""
    import jax.numpy as jnp

    def fault(batch, index, step):
        poison = (index == seed_index) & (step == at)
        return batch.replace(obs=jnp.where(poison, jnp.nan, batch.obs))
    return fault


def test_injected_nan_freezes_only_its_seed(minari_root, tmp_path):
    clean = offline.train("bc", DATASET, 3, TINY, TINY_BC, tmp_path / "clean", progress=False)
    faulty = offline.train("bc", DATASET, 3, TINY, TINY_BC, tmp_path / "faulty",
                           progress=False, fault=nan_batch(seed_index=1, at=150))
    for seed in (0, 2):
        pd.testing.assert_frame_equal(comparable_metrics(clean[clean.seed == seed]),
                                      comparable_metrics(faulty[faulty.seed == seed]),
                                      rtol=1e-6, atol=1e-6)
    bad = comparable_metrics(faulty[faulty.seed == 1])
    assert list(bad.diverged) == [0.0, 1.0, 1.0]
    assert (bad.diverged_at[1:] == 150).all() and bad.diverged_at[0] == -1
    # the frozen seed is evaluated with its last finite parameters: a real score
    assert np.isfinite(bad.eval_return).all()
    assert np.isnan(bad.bc_loss[2])  # no loss is reported for updates that were thrown away
    info = json.loads((tmp_path / "faulty" / "run.json").read_text())
    assert info["per_seed"]["1"]["diverged"] and not info["per_seed"]["0"]["diverged"]


def test_frozen_seed_keeps_its_last_finite_parameters(minari_root):
    """A seed poisoned at update 150 ends 300 updates with the parameters it had after 150."""
    import jax

    from offbench.data import load

    dataset = load(DATASET)
    arrays, mean, std = offline.prepare_arrays(bc, TINY_BC, dataset)
    config = dataclasses.replace(TINY, eval_every=50)
    states = []
    for fault, periods in ((None, 3), (nan_batch(seed_index=0, at=150), 6)):
        problem = offline.Problem(bc, TINY_BC, "hopper", config, mean, std, fault=fault)
        carry = offline.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
        carry, _ = jax.jit(offline.make_chunk(problem, periods))(carry, 0, arrays)
        states.append(carry)
    clean, frozen = states
    assert bool(frozen.diverged) and int(frozen.diverged_at) == 150
    for a, b in zip(jax.tree.leaves(clean.algo.actor), jax.tree.leaves(frozen.algo.actor),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        assert np.isfinite(np.asarray(b)).all()


def bc_with_a_nan_loss(skips_metrics: bool):
    """BC whose reported loss is NaN on a poisoned batch while its parameters stay finite (it
    learns from the batch with the NaN zeroed): a NaN loss alone, which the parameters miss."""
    import types

    import jax.numpy as jnp

    def update(state, batch, key):
        poisoned = jnp.isnan(batch.obs).any()
        state, metrics = bc.update(state, batch.replace(obs=jnp.nan_to_num(batch.obs)), key)
        return state, {**metrics, "bc_loss": jnp.where(poisoned, jnp.nan, metrics["bc_loss"])}

    module = types.SimpleNamespace(**{n: getattr(bc, n) for n in dir(bc) if n[:2] != "__"})
    module.update, module.SKIPS_METRICS = update, skips_metrics
    return module


@pytest.mark.parametrize("skips_metrics", [False, True])
def test_a_nan_loss_alone_is_divergence_unless_the_algorithm_skips_metrics(
        minari_root, skips_metrics):
    import jax

    from offbench.data import load

    arrays, mean, std = offline.prepare_arrays(bc, TINY_BC, load(DATASET))
    config = dataclasses.replace(TINY, eval_every=50)
    problem = offline.Problem(bc_with_a_nan_loss(skips_metrics), TINY_BC, "hopper", config,
                              mean, std, fault=nan_batch(seed_index=0, at=150))
    carry = offline.init_carry(problem, jax.random.PRNGKey(0), 0, arrays)
    carry, _ = jax.jit(offline.make_chunk(problem, 6))(carry, 0, arrays)
    assert jax.tree.all(jax.tree.map(lambda x: bool(np.isfinite(x).all()), carry.algo))
    if skips_metrics:  # a NaN metric there means "not computed": the seed goes on
        assert not bool(carry.diverged) and int(carry.diverged_at) == -1
    else:
        assert bool(carry.diverged) and int(carry.diverged_at) == 150


def run_cli(*args, env=None):
    return subprocess.run([OFFBENCH, *args], capture_output=True, text=True, timeout=600,
                          env=env)


def test_resume_after_kill_equals_uninterrupted_run(minari_root, tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    base = ["run", "bc", DATASET, "--seeds", "2", *TINY_FLAGS]
    full = run_cli(*base, "--out", str(tmp_path / "full"), env=env)
    assert full.returncode == 0, full.stderr
    assert "normalized score over 2 seeds" in full.stdout
    killed = run_cli_killed([*base, "--out", str(tmp_path / "killed")], after_chunks=1,
                            env=env)
    assert killed.returncode == 17, killed.stderr
    assert len(pd.read_csv(tmp_path / "killed" / "metrics.csv")) == 2
    resumed = run_cli(*base, "--out", str(tmp_path / "killed"), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    a = comparable_metrics(pd.read_csv(tmp_path / "full" / "metrics.csv"))
    b = comparable_metrics(pd.read_csv(tmp_path / "killed" / "metrics.csv"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # resuming with other settings is refused with one clear error, and nothing is touched
    before = {f: (tmp_path / "full" / f).read_bytes() for f in ("metrics.csv", "run.json")}
    changed = run_cli(*base, "--set", "batch_size=32", "--out", str(tmp_path / "full"),
                      "--resume", env=env)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr, changed.stderr
    assert "--resume with settings that differ" in changed.stderr
    assert "algo_config" in changed.stderr
    assert before == {f: (tmp_path / "full" / f).read_bytes() for f in before}
    bad_value = run_cli(*base, "--set", "batch_size=big", "--out", str(tmp_path / "new"), env=env)
    assert bad_value.returncode == 2 and "Traceback" not in bad_value.stderr
    assert "batch_size=big: expected int" in bad_value.stderr, bad_value.stderr


def test_run_shows_a_progress_line_per_evaluation_period(minari_root, tmp_path):
    # one checkpoint chunk of 3 evaluation periods: a line as each period ends, not one at the
    # chunk's end; with the updates done of the total, the mean score over seeds, the time
    # since the cell started and, but for the last, the estimated time left
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    flags = [*TINY_FLAGS[:TINY_FLAGS.index("--checkpoint-every")], "--checkpoint-every", "300",
             *TINY_FLAGS[TINY_FLAGS.index("--checkpoint-every") + 2:]]
    out = run_cli("run", "bc", DATASET, "--seeds", "2", *flags, "--out", str(tmp_path / "run"),
                  env=env)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("    bc on ")]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(lines) == 3, out.stdout
    pattern = (r"    bc on \S+ \(offline, 2 seeds\): updates (\d+)/300 \((\d+)%\): "
               r"score (-?[\d.]+) \(mean of 2 seeds\), \d+ s(, ETA \d+ s)?$")
    for period, line in enumerate(lines):
        match = re.match(pattern, line)
        assert match, line
        updates, percent, score, eta = match.groups()
        assert (int(updates), int(percent)) == (100 * (period + 1), 100 * (period + 1) // 3)
        mean = metrics[metrics.period == period].normalized_score.mean()
        assert score == f"{mean:.1f}"
        assert (eta is None) == (period == 2)


def test_progress_leaves_the_numbers_as_one_program_per_chunk_gives_them(minari_root, tmp_path):
    """The driver runs one compiled evaluation period per call, so progress can move every
    period: the metrics are bit for bit those of a run without progress output, and those of
    the whole chunk in one compiled scan (how runs were computed before). TD3+BC draws random
    numbers, so a period run with another key would show."""
    import jax
    import jax.numpy as jnp

    from offbench.loops import driver

    config = dataclasses.replace(TINY, checkpoint_every=300)
    algo_config = td3_bc.Config(hidden=(32, 32), batch_size=64)
    quiet = offline.train("td3_bc", DATASET, 2, config, algo_config, tmp_path / "quiet",
                          progress=False)
    seen = []
    shown = offline.train("td3_bc", DATASET, 2, config, algo_config, tmp_path / "shown",
                          progress=True, on_period=lambda rows, p: seen.append((p, rows)))
    pd.testing.assert_frame_equal(comparable_metrics(quiet), comparable_metrics(shown),
                                  check_exact=True)
    assert [p.period for p, _ in seen] == [1, 2, 3] and {p.periods for p, _ in seen} == {3}
    assert [p.where for p, _ in seen] == ["updates 100/300", "updates 200/300",
                                          "updates 300/300"]
    for p, rows in seen:
        assert [r["normalized_score"] for r in rows] == list(
            shown[shown.period == p.period - 1].sort_values("seed").normalized_score)
    # wall_s is the time at each period's end: it grows within a chunk
    assert shown.groupby("period").wall_s.first().is_monotonic_increasing
    assert shown.wall_s.nunique() == 3
    problem, arrays = offline.setup("td3_bc", DATASET, config, algo_config)
    init = jax.jit(jax.vmap(lambda k, i: offline.init_carry(problem, k, i, arrays)))
    chunk = jax.jit(jax.vmap(offline.make_chunk(problem, 3), in_axes=(0, None, None)))
    _, (metrics, _) = chunk(init(*driver._seed_inputs(0, 2)), jnp.asarray(0, jnp.int32), arrays)
    metrics = jax.device_get(metrics)
    for row in quiet.to_dict("records"):
        for key, values in metrics.items():
            np.testing.assert_array_equal(np.float32(row[key]), values[row["seed"], row["period"]],
                                          err_msg=key)


TWO_DEVICES = """
import json, sys
import jax
assert jax.device_count() == 2, jax.devices()
from pathlib import Path
from offbench_baselines import bc, td3_bc
from offbench.loops import driver, offline
assert driver.seed_sharding(2) is not None
config = offline.OfflineConfig(**json.loads(sys.argv[1]))
seeds, group = int(sys.argv[4]), (int(sys.argv[5]) or None)
df = offline.train("bc", sys.argv[2], seeds, config, bc.Config(hidden=(32, 32), batch_size=64),
                   Path(sys.argv[3]), progress=False, seed_group=group)
"""


# 4 seeds in groups of 2 on two devices: each group takes one seed from each device
@pytest.mark.parametrize("seeds,group", [(2, 0), (4, 2)])
def test_two_devices_give_the_same_results_as_one(minari_root, tmp_path, seeds, group):
    one = offline.train("bc", DATASET, seeds, TINY, TINY_BC, tmp_path / "one", progress=False)
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES,
                           json.dumps(dataclasses.asdict(TINY)), DATASET, str(tmp_path / "two"),
                           str(seeds), str(group)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = pd.read_csv(tmp_path / "two" / "metrics.csv")
    pd.testing.assert_frame_equal(comparable_metrics(one), comparable_metrics(two),
                                  rtol=1e-4, atol=1e-4)
    # the run really split its seeds between the two devices (the driver records where they ran)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["seed_devices"] == 2
    assert json.loads((tmp_path / "one" / "run.json").read_text())["seed_devices"] == 1


def test_seed_groups_equal_all_seeds_vmapped(minari_root, tmp_path):
    # --seed-group runs vmapped groups one after another (driver.map_seeds, a CPU speed knob):
    # every seed must get its own numbers back in its own row, equal to all-vmapped up to float
    # rounding. TD3+BC draws random numbers, so a seed given another's key would show.
    config = td3_bc.Config(hidden=(32, 32), batch_size=64)
    together = offline.train("td3_bc", DATASET, 4, TINY, config, tmp_path / "all",
                             progress=False)
    assert together.groupby("seed").eval_return.last().nunique() == 4  # the seeds differ
    for group in (1, 2):
        grouped = offline.train("td3_bc", DATASET, 4, TINY, config, tmp_path / f"g{group}",
                                progress=False, seed_group=group)
        pd.testing.assert_frame_equal(comparable_metrics(together), comparable_metrics(grouped),
                                      rtol=1e-4, atol=1e-4)
        assert json.loads((tmp_path / f"g{group}" / "run.json").read_text())["seed_group"] == group


def test_a_seed_group_that_does_not_divide_the_seeds_is_refused(minari_root, tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root)}
    out = run_cli("run", "bc", DATASET, "--seeds", "4", "--seed-group", "3", *TINY_FLAGS,
                  "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--seed-group 3 must divide the 4 seeds" in out.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_top_fraction_bc_keeps_the_best_episodes():
    arrays = {"reward": np.array([1, 1, 5, 0, 0, 0, 3], np.float32),
              "terminal": np.array([0, 1, 1, 0, 0, 1, 1], np.float32),
              "obs": np.arange(7, dtype=np.float32)[:, None]}
    lengths = np.array([2, 1, 3, 1])  # returns 2, 5, 0, 3, all terminated
    kept, kept_lengths = bc.prepare_dataset(arrays, lengths, bc.Config(top_fraction=0.5))
    np.testing.assert_array_equal(kept["obs"][:, 0], [2, 6])  # episodes with returns 5 and 3
    np.testing.assert_array_equal(kept_lengths, [1, 1])


@pytest.mark.parametrize("args,message", [
    (["run", "bc", "hopper-mediocre"], "valid kinds are"),
    (["run", "sac", "hopper-medium"], "has no offline mode"),
    (["run", "bcc", "hopper-medium"], r"unknown algorithm 'bcc'"),
    (["run", "bc", "hopper-medium"], "not built .*offbench datasets build hopper-medium"),
    (["run", "bc", "hopper-medium", "--seeds", "0"], "argument --seeds: must be at least 1"),
    (["run", "bc", "hopper-medium", "--eval-every", "1e4"],
     "argument --eval-every: expected a whole number, got '1e4'"),
])
def test_bad_input_is_one_clear_error(args, message, tmp_path):
    out = run_cli(*args, "--root", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert re.search(message, out.stderr), out.stderr


def test_bad_top_fraction_is_refused():
    import jax

    from offbench.algorithms import EnvSpec

    with pytest.raises(ValueError, match="top_fraction must be in"):
        bc.init(jax.random.PRNGKey(0), EnvSpec(3, 2), bc.Config(top_fraction=2.0))


def test_reward_transforms_and_mc_returns_agree(minari_root):
    """The harness rescales rewards as the config asks and recomputes the Monte-Carlo returns
    from the rescaled rewards (an affine map of old returns would be wrong: bias x horizon)."""
    import types

    from offbench.data import load

    @dataclasses.dataclass(frozen=True)
    class Config:
        reward_scale: float = 2.0
        reward_bias: float = -1.0
        discount: float = 0.5

    dataset = load(DATASET, derived=("mc_returns",), discount=0.5)
    # an algorithm with no hooks of its own: only the harness's transforms apply
    algo = types.SimpleNamespace(Config=Config, MODES=("offline",), init=print, update=print,
                                 act=print)
    arrays, _, _ = offline.prepare_arrays(algo, Config(), dataset)
    raw = np.asarray(dataset.rewards, np.float64)
    np.testing.assert_allclose(np.asarray(arrays["reward"]), 2.0 * raw - 1.0, rtol=1e-6)
    first = int(dataset.metadata["episode_lengths"][0])
    rewards = 2.0 * raw[:first] - 1.0
    expected = [sum(0.5 ** k * r for k, r in enumerate(rewards[t:])) for t in range(first)]
    np.testing.assert_allclose(np.asarray(arrays["mc_returns"])[:first], expected, rtol=1e-5)


def test_last_score_is_a_many_episode_final_evaluation(minari_root, tmp_path):
    """run.json's last_score (the leaderboard's `last`) is the final policy evaluated on
    final_eval_episodes episodes apart from the periodic evaluations, with its standard error;
    recomputed here by hand from the episode returns of the restored final policy."""
    import jax

    config = dataclasses.replace(TINY, final_eval_episodes=6)
    offline.train("bc", DATASET, 2, config, TINY_BC, tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    problem, _, carry, done = offline.restore(tmp_path / "run")
    assert done == config.periods
    for s in (0, 1):
        entry = info["per_seed"][str(s)]
        assert entry["final_eval_episodes"] == 6 and "last_periodic_score" in entry
        state = jax.tree.map(lambda x, s=s: x[s], carry)
        key = jax.random.fold_in(state.key, offline.FINAL_EVAL_SALT)
        returns = np.asarray(offline.evaluate(problem, state.algo, key, 6), np.float64)
        assert returns.shape == (6,)
        span = problem.ref_max - problem.ref_min
        assert entry["last_return"] == pytest.approx(returns.mean(), rel=1e-5)
        assert entry["last_score"] == pytest.approx(
            100 * (returns.mean() - problem.ref_min) / span, rel=1e-5)
        assert entry["last_score_se"] == pytest.approx(
            100 * returns.std(ddof=1) / np.sqrt(6) / span, rel=1e-4)
    # 0 turns it off: the last periodic evaluation is the last score
    off = dataclasses.replace(TINY, final_eval_episodes=0)
    df = offline.train("bc", DATASET, 1, off, TINY_BC, tmp_path / "off", progress=False)
    entry = json.loads((tmp_path / "off" / "run.json").read_text())["per_seed"]["0"]
    assert "final_eval_episodes" not in entry
    assert entry["last_score"] == pytest.approx(df.sort_values("period").normalized_score.iloc[-1])
    with pytest.raises(ValueError, match="final_eval_episodes must be >= 0"):
        dataclasses.replace(TINY, final_eval_episodes=-1).validate()


def test_a_full_disk_during_a_checkpoint_is_one_error_and_resume_recovers(minari_root, tmp_path,
                                                                           monkeypatch, capsys):
    """The disk fills while the second checkpoint is saved: `offbench run` says so in one line
    (no traceback) and how to go on; --resume then ends with the uninterrupted run's numbers."""
    import errno

    from offbench import cli
    from offbench.loops import driver

    base = ["run", "bc", DATASET, "--seeds", "2", *TINY_FLAGS]
    assert cli.main([*base, "--out", str(tmp_path / "full")]) == 0
    real = driver._checkpointer

    def filling(directory):
        manager = real(directory)
        saves = {"n": 0}
        original = manager.save

        def save(step, *args, **kwargs):
            saves["n"] += 1
            if saves["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(step, *args, **kwargs)
        manager.save = save
        return manager

    monkeypatch.setattr(driver, "_checkpointer", filling)
    capsys.readouterr()
    assert cli.main([*base, "--out", str(tmp_path / "full-disk")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device; free disk space, then rerun with --resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(driver, "_checkpointer", real)
    assert cli.main([*base, "--out", str(tmp_path / "full-disk"), "--resume"]) == 0
    a = comparable_metrics(pd.read_csv(tmp_path / "full" / "metrics.csv"))
    b = comparable_metrics(pd.read_csv(tmp_path / "full-disk" / "metrics.csv"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
