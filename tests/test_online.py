"""The online loop: the contract example trains, seeds vmap exactly, a killed run resumes."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offbench.loops import online
from offbench_baselines import sac

from conftest import run_cli_killed

ROOT = Path(__file__).resolve().parents[1]
OFFBENCH = str(Path(sys.executable).parent / "offbench")
# warm-up ends inside the first period, so the first checkpoint holds trained parameters
TINY = online.OnlineConfig(env_steps=300, num_envs=2, warmup_steps=50, utd=2, eval_every=100,
                           eval_episodes=2, checkpoint_every=100, episode_length=50,
                           backend="mujoco")
TINY_SAC = sac.Config(hidden=(32, 32), batch_size=32)
TINY_FLAGS = ["--env-steps", "300", "--num-envs", "2", "--warmup-steps", "50", "--utd", "2",
              "--eval-every", "100", "--eval-episodes", "2", "--checkpoint-every", "100",
              "--episode-length", "50", "--backend", "mujoco", "--set", "hidden=32,32",
              "--set", "batch_size=32"]


def test_contract_example_from_readme_trains(tmp_path):
    from examples import minimal_ddpg

    # CONTRIBUTING.md shows this very file
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    block = re.search(r"```python\n# examples/minimal_ddpg.py\n(.*?)```", guide, re.S).group(1)
    assert block.strip() == (ROOT / "examples" / "minimal_ddpg.py").read_text().strip()

    cfg = minimal_ddpg.Config(hidden=(32, 32), batch_size=32)
    df = online.train("examples.minimal_ddpg", "halfcheetah", 1, TINY, cfg, tmp_path,
                      progress=False)
    assert list(df.period) == [0, 1, 2]
    assert list(df.env_steps) == [100, 200, 300]
    assert np.all(np.isfinite(df[["critic_loss", "actor_loss"]].to_numpy()))
    assert np.all(np.isfinite(df.eval_return))
    assert (tmp_path / "run.json").exists()


def test_vmapped_seeds_equal_seeds_run_alone(tmp_path):
    """Each seed inside the vmapped program trains as it does alone. XLA batches the seeds'
    matmuls into different kernels, so the numbers agree to float32 rounding, not bit for bit
    (the C physics itself is bitwise: tests/test_backends.py)."""
    together = online.train("sac", "hopper", 2, TINY, TINY_SAC, tmp_path / "both",
                            progress=False)
    for seed in (0, 1):
        alone = online.train("sac", "hopper", 1, TINY, TINY_SAC, tmp_path / f"s{seed}",
                             first_seed=seed, progress=False)
        mine = together[together.seed == seed].drop(columns="wall_s").reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.drop(columns="wall_s"), mine, rtol=1e-4, atol=1e-4)
    # --seed-group 1: the same two seeds one after another in one program (driver.map_seeds)
    grouped = online.train("sac", "hopper", 2, TINY, TINY_SAC, tmp_path / "grouped",
                           progress=False, seed_group=1)
    pd.testing.assert_frame_equal(together.drop(columns="wall_s"),
                                  grouped.drop(columns="wall_s"), rtol=1e-4, atol=1e-4)


def run_cli(*args):
    return subprocess.run([OFFBENCH, *args], capture_output=True, text=True, timeout=600)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    base = ["train-online", "sac", "hopper", "--seeds", "2", *TINY_FLAGS]
    full = run_cli(*base, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = run_cli_killed([*base, "--out", str(tmp_path / "killed")], after_chunks=1)
    assert killed.returncode == 17, killed.stderr  # died right after its first checkpoint
    started = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert "wall_s" not in started and started["command"].startswith("offbench train-online")
    assert len(pd.read_csv(tmp_path / "killed" / "metrics.csv")) == 2  # 1 period x 2 seeds
    changed = run_cli(*base, "--out", str(tmp_path / "killed"), "--resume", "--utd", "3")
    assert changed.returncode == 2 and "differ" in changed.stderr and "online_config" in \
        changed.stderr
    resumed = run_cli(*base, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns="wall_s")
    b = pd.read_csv(tmp_path / "killed" / "metrics.csv").drop(columns="wall_s")
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # bit for bit
    # resuming a finished run changes nothing, not even its record
    record = (tmp_path / "full" / "run.json").read_bytes()
    again = run_cli(*base, "--out", str(tmp_path / "full"), "--resume")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "full" / "run.json").read_bytes() == record


def test_train_online_defaults_evaluation_episodes(tmp_path):
    # without --eval-episodes the run evaluates the documented 10 episodes (it once passed None)
    at = TINY_FLAGS.index("--eval-episodes")
    flags = TINY_FLAGS[:at] + TINY_FLAGS[at + 2:]
    run = run_cli("train-online", "sac", "hopper", *flags, "--env-steps", "100",
                  "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["online_config"]["eval_episodes"] == 10
    with pytest.raises(ValueError, match="eval_episodes must be a positive integer"):
        dataclasses.replace(TINY, eval_episodes=None).validate()


def test_existing_run_is_not_overwritten(tmp_path):
    df = online.train("sac", "hopper", 1, dataclasses.replace(TINY, env_steps=100), TINY_SAC,
                      tmp_path, progress=False)
    before = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(ValueError, match="--resume"):
        online.train("sac", "hopper", 1, TINY, TINY_SAC, tmp_path, progress=False)
    assert (tmp_path / "metrics.csv").read_bytes() == before and len(df) == 1


@pytest.mark.parametrize("args,message", [
    (["train-online", "sacc", "hopper"], r"unknown algorithm 'sacc'; valid algorithms: \[.*'sac'"),
    (["train-online", "sac", "hoper"], "unknown task 'hoper'; valid tasks"),
    (["train-online", "sac", "hopper", "--set", "lr=1"], "unknown config key 'lr'.*actor_lr"),
    (["train-online", "sac", "hopper", "--set", "batch_size=big"], "batch_size=big: expected int"),
])
def test_bad_input_is_one_clear_error(args, message):
    out = run_cli(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert re.search(message, out.stderr), out.stderr
