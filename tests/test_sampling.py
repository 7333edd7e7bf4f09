"""Trajectory-weighted sampling (offbench/loops/sampling.py): the weights of a hand-made dataset
equal hand-computed values, drawn frequencies converge to them, the option reaches the loop
and the cell identity only when it is not uniform, and uniform sampling is unchanged."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from offbench.harness import cells
from offbench.loops import offline, sampling
from offbench_baselines import bc

from conftest import TINY_DATASET

# three episodes of lengths 2, 3, 1; returns 1, 0, 5; initial observations 0, 1, 2 (1-D)
LENGTHS = np.array([2, 3, 1])
REWARDS = np.array([0.5, 0.5, 0.0, 0.0, 0.0, 5.0])
OBS = np.array([[0.0], [9.0], [1.0], [7.0], [3.0], [2.0]])


def per_transition(p_episode):
    return np.repeat(p_episode, LENGTHS)


def test_return_weights_equal_hand_computed_values():
    # x = (G - 0) / 5 = [0.2, 0, 1]; weight of each transition exp(x / alpha)
    alpha = 0.5
    w = np.exp(np.array([0.2, 0.0, 1.0]) / alpha)
    expected = w / (2 * w[0] + 3 * w[1] + 1 * w[2])
    got = sampling.transition_probabilities("return", alpha, REWARDS, LENGTHS, OBS)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert float(np.sum(LENGTHS * got)) == pytest.approx(1.0, abs=1e-12)


def test_advantage_weights_equal_hand_computed_values():
    # OLS of G = [1, 0, 5] on s0 = [0, 1, 2]: slope ((-1)(-1) + 0 + (1)(3)) / 2 = 2, intercept
    # 2 - 2 * 1 = 0, so V = [0, 2, 4], A = [1, -2, 1], x = (A + 2) / 3 = [1, 0, 1]
    alpha = 0.1
    w = np.exp(np.array([1.0, 0.0, 1.0]) / alpha)
    expected = w / (2 * w[0] + 3 * w[1] + 1 * w[2])
    got = sampling.transition_probabilities("advantage", alpha, REWARDS, LENGTHS, OBS)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_equal_returns_sample_uniformly():
    rewards = np.array([1.0, 1.0, 0.5, 0.5, 1.0, 2.0])  # every return is 2
    got = sampling.transition_probabilities("return", 0.1, rewards, LENGTHS, OBS)
    np.testing.assert_allclose(got, np.full(3, 1 / 6), rtol=1e-12)


@pytest.mark.parametrize("scheme,alpha", [("return", 0.5), ("advantage", 1.0)])
def test_drawn_frequencies_converge_to_the_weights(scheme, alpha):
    """400k draws: every transition's count is within 5 binomial standard deviations of
    n x p (a false alarm has probability below 1e-5 over the 6 transitions; with a fixed key
    the test is deterministic), and the total variation distance is below 0.005."""
    p = per_transition(sampling.transition_probabilities(scheme, alpha, REWARDS, LENGTHS, OBS))
    table = {k: jax.numpy.asarray(v) for k, v in
             sampling.tables(scheme, alpha, REWARDS, LENGTHS, OBS).items()}
    n = 400_000
    draws = np.asarray(jax.jit(lambda k: sampling.indices(table, k, n))(jax.random.PRNGKey(3)))
    counts = np.bincount(draws, minlength=6)
    assert counts.sum() == n and draws.min() >= 0 and draws.max() < 6
    z = (counts - n * p) / np.sqrt(n * p * (1 - p))
    assert np.abs(z).max() < 5, (counts / n, p)
    assert 0.5 * np.abs(counts / n - p).sum() < 0.005


def test_a_transition_of_a_zero_weight_episode_is_never_drawn_past_the_data():
    """u close to 1 and offsets close to the length stay inside the last episode."""
    table = {k: jax.numpy.asarray(v) for k, v in
             sampling.tables("return", 0.01, REWARDS, LENGTHS, OBS).items()}
    draws = np.asarray(sampling.indices(table, jax.random.PRNGKey(0), 100_000))
    assert draws.max() <= 5 and (draws == 5).mean() > 0.99  # episode 3 has x = 1


def test_uniform_sampling_is_the_former_uniform_draw():
    """Uniform batches are exactly the former `randint` draw over the transitions (the code
    path of every run before the option), and `setup` adds no sampler tables for them."""
    rng = np.random.default_rng(0)
    arrays = {"obs": jax.numpy.asarray(rng.normal(size=(50, 3)), np.float32),
              "action": jax.numpy.asarray(rng.normal(size=(50, 2)), np.float32),
              "reward": jax.numpy.asarray(rng.normal(size=50), np.float32),
              "next_obs": jax.numpy.asarray(rng.normal(size=(50, 3)), np.float32),
              "terminal": jax.numpy.zeros(50), "mc_returns": jax.numpy.arange(50.0)}
    key = jax.random.PRNGKey(11)
    batch = offline.sample(arrays, key, 16)
    index = jax.random.randint(key, (16,), 0, 50)
    np.testing.assert_array_equal(np.asarray(batch.obs), np.asarray(arrays["obs"][index]))
    np.testing.assert_array_equal(np.asarray(batch.extra["mc_returns"]), np.asarray(index))


def test_the_sampler_is_in_the_cell_identity_only_when_not_uniform():
    before = {"updates", "eval_every", "eval_episodes", "checkpoint_every", "backend",
              "episode_length", "final_eval_episodes"}  # the budget keys cells had before
    plain = cells.resolve("bc", "hopper-medium-100k", "offline", budget={"updates": 1000},
                          fingerprint=None)
    explicit = cells.resolve("bc", "hopper-medium-100k", "offline", fingerprint=None,
                             budget={"updates": 1000, "sampler": "uniform"})
    weighted = cells.resolve("bc", "hopper-medium-100k", "offline", fingerprint=None,
                             budget={"updates": 1000, "sampler": "return"})
    assert set(plain["budget"]) == before and plain == explicit
    assert weighted["budget"]["sampler"] == "return"
    assert weighted["budget"]["sampler_temperature"] == sampling.DEFAULT_TEMPERATURE
    assert weighted != plain
    with pytest.raises(ValueError, match="sampler 'rank' is not one of"):
        cells.resolve("bc", "hopper-medium-100k", "offline", fingerprint=None,
                      budget={"sampler": "rank"})
    with pytest.raises(ValueError, match="sampler_temperature must be > 0"):
        cells.resolve("bc", "hopper-medium-100k", "offline", fingerprint=None,
                      budget={"sampler": "return", "sampler_temperature": 0.0})


def test_a_weighted_run_samples_by_the_weights_of_its_dataset(minari_root, tmp_path):
    """setup() builds the tables from the dataset's episodes; a short BC run trains with them
    and records the sampler in its settings (a uniform run records none)."""
    from offbench.data import load

    dataset = load(TINY_DATASET)
    config = offline.OfflineConfig(updates=100, eval_every=100, eval_episodes=1,
                                   checkpoint_every=100, episode_length=20, backend="mujoco",
                                   final_eval_episodes=0, sampler="return",
                                   sampler_temperature=0.05)
    algo_config = bc.Config(hidden=(16, 16), batch_size=32)
    _, arrays = offline.setup("bc", TINY_DATASET, config, algo_config)
    lengths = np.asarray(dataset.metadata["episode_lengths"])
    p = sampling.transition_probabilities("return", 0.05, np.asarray(dataset.rewards), lengths,
                                          np.asarray(dataset.observations))
    cdf = np.asarray(arrays[sampling.KEY]["cdf"])
    np.testing.assert_allclose(np.diff(np.r_[0.0, cdf]), lengths * p, atol=1e-6)
    assert math.isclose(float(np.sum(lengths * p)), 1.0)
    offline.train("bc", TINY_DATASET, 1, config, algo_config, tmp_path / "rw", progress=False)
    settings = json.loads((tmp_path / "rw" / "settings.json").read_text())
    assert settings["offline_config"]["sampler"] == "return"
    _, uniform = offline.setup("bc", TINY_DATASET, dataclasses.replace(config, sampler="uniform"),
                               algo_config)
    assert sampling.KEY not in uniform


def test_the_offline_report_tells_weighted_runs_apart_and_checks_the_claim(tmp_path):
    """A weighted run is labelled with its sampler (never pooled with the uniform run's seeds)
    and the report marks "weighted beats uniform" as the data say."""
    import pandas as pd

    from offbench.reports import offline as offline_report

    dataset = "halfcheetah-random-100k+mix=expert:0.05"
    runs = []
    for name, loop, scores in (
            ("uniform", {}, [20.0, 22.0]),
            ("rw", {"sampler": "return", "sampler_temperature": 0.1}, [40.0, 42.0]),
            ("aw", {"sampler": "advantage", "sampler_temperature": 0.5}, [21.0, 19.0])):
        run = tmp_path / name
        run.mkdir()
        pd.DataFrame([{"seed": s, "period": 0, "updates": 100, "normalized_score": v}
                      for s, v in enumerate(scores)]).to_csv(run / "metrics.csv", index=False)
        (run / "run.json").write_text(json.dumps({
            "algorithm": "td3_bc", "dataset": dataset, "task": "halfcheetah", "command": "run",
            "offline_config": {"updates": 100, "eval_episodes": 5, **loop},
            "per_seed": {str(s): {"last_score": v, "best_score": v, "diverged": False}
                         for s, v in enumerate(scores)}}))
        runs.append(run)
    table = offline_report.write_report(runs, tmp_path / "check.md", "tiny")
    assert sorted(table.algorithm) == ["td3_bc", "td3_bc[sampler=advantage:0.5]",
                                       "td3_bc[sampler=return:0.1]"]
    text = (tmp_path / "check.md").read_text()
    # means 41 vs 21, population stds 1 and 1: SE 1 each, 2 SE of the difference 2.8
    assert (f"- held: td3_bc[sampler=return:0.1] beats td3_bc (uniform sampling) on {dataset} "
            "(41.0 vs 21.0; difference +20.0, 2 SE 2.8)") in text
    assert (f"- within noise: td3_bc[sampler=advantage:0.5] beats td3_bc (uniform sampling) on "
            f"{dataset} (20.0 vs 21.0; difference -1.0, 2 SE 2.8)") in text


def test_the_leaderboard_never_pools_weighted_and_uniform_cells():
    from offbench.reports import leaderboard

    budget = {"updates": 100, "eval_every": 50, "eval_episodes": 5, "final_eval_episodes": 10}
    uniform = leaderboard.budget_text("offline", budget)
    weighted = leaderboard.budget_text("offline", {**budget, "sampler": "advantage",
                                                   "sampler_temperature": 0.1})
    assert uniform == ("100 updates, eval every 50 (5 episodes of 1000 steps), final eval 10 "
                       "episodes")
    assert weighted == uniform + ", advantage-weighted sampling (temperature 0.1)"


def test_offbench_run_takes_the_sampler(minari_root, tmp_path, capsys):
    from offbench import cli

    flags = ["--seeds", "1", "--updates", "100", "--eval-every", "100", "--eval-episodes", "1",
             "--episode-length", "20", "--backend", "mujoco", "--set", "hidden=16,16",
             "--set", "batch_size=32", "--sampler", "advantage", "--sampler-temperature", "0.5"]
    assert cli.main(["run", "bc", TINY_DATASET, *flags, "--out", str(tmp_path / "aw")]) == 0
    loop = json.loads((tmp_path / "aw" / "run.json").read_text())["offline_config"]
    assert (loop["sampler"], loop["sampler_temperature"]) == ("advantage", 0.5)
    capsys.readouterr()
    assert cli.main(["run", "bc", TINY_DATASET, "--mode", "o2o", "--sampler", "return"]) != 0
    assert "--sampler only applies with --mode offline" in capsys.readouterr().err
