"""`offbench doctor`: it runs on CPU with the MJX backend forced (the path an accelerator
takes), and its memory estimate is the hand-computed size of what a cell holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offbench.cli import main
from offbench.doctor import cell_memory
from offbench.harness import cells


def test_doctor_runs_on_cpu_with_mjx_forced(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    # pointmaze: the cheapest MJX program to compile; a tiny timing keeps the test short
    code = main(["doctor", "--profile", "cpu", "--backend", "mjx", "--task", "pointmaze-umaze",
                 "--batch", "4", "--updates", "20", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for line in ("device ", "backend     mjx", "env ", "offline ", "memory ", "doctor      ok"):
        assert line in printed
    report = json.loads(out.read_text())
    assert report["backend"] == "mjx"
    assert set(report["env_steps_per_s"]) == {"mjx", "mujoco"}
    assert all(rate > 0 for rate in report["env_steps_per_s"].values())
    assert report["offline"]["updates_per_s"] > 0 and report["offline"]["compile_s"] > 0
    assert report["devices"][0]["memory_bytes"] > 2 ** 30  # the host's RAM on CPU
    # the largest cell of all the profile's sections: RLPD's hybrid cell (10 critics and a
    # replay buffer per seed), not an offline one
    assert report["memory"]["cell"].startswith("rlpd [offline_ratio=0.5] on pointmaze-umaze")


def _mlp_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def test_memory_estimate_is_hand_computed_size():
    # td3_bc offline on hopper (obs 11, act 3), 3 seeds, 100k transitions, 2x64 networks
    config = cells.resolve("td3_bc", "hopper-medium-100k", "offline", items=["hidden=64,64"],
                           seeds=3, fingerprint="x")
    memory = cell_memory(config)
    assert memory["dataset"] == 100_000 * (11 + 11 + 3 + 1 + 1) * 4
    assert memory["replay"] == 0
    actor = _mlp_params([11, 64, 64, 3])
    critics = 2 * _mlp_params([14, 64, 64, 1])
    # per seed, in float32: actor and critics, their targets and Adam's two moments of each
    floor = 3 * 4 * 4 * (actor + critics)
    assert floor <= memory["state"] <= floor + 3 * 1024  # + step counters and the like
    assert memory["total"] == memory["dataset"] + memory["state"]


def test_memory_estimate_counts_a_replay_buffer_per_seed():
    config = cells.resolve("rlpd", "hopper-medium-100k", "hybrid", seeds=2, fingerprint="x",
                           budget={"online_steps": 5000, "eval_every": 1000})
    memory = cell_memory(config)
    assert memory["replay"] == 2 * 5000 * (11 + 11 + 3 + 1 + 1 + 1) * 4
    assert np.isfinite(memory["total"])


@pytest.mark.parametrize("profile", ["nope"])
def test_doctor_names_an_unknown_profile(profile, capsys):
    assert main(["doctor", "--profile", profile]) == 2
    assert "unknown profile 'nope'; profiles:" in capsys.readouterr().err


@pytest.mark.parametrize("dynamics", ["learned", "true"])
def test_memory_estimate_of_a_model_based_cell_counts_its_model_buffer(dynamics):
    # MOPO's init needs its dataset: the estimate traces it on abstract arrays of the cell's
    # size; its state holds the model buffer, (capacity, 2 obs + action + reward + terminal).
    # With true dynamics init steps the task's env, so the estimate must name the task.
    from offbench_baselines import mopo

    config = cells.resolve("mopo", "hopper-medium-100k", "offline", seeds=2, fingerprint="x",
                           items=[f"dynamics={dynamics}"])
    memory = cell_memory(config)
    cfg = mopo.Config()
    rows = cfg.rollout_batch_size * cfg.model_retain_epochs * cfg.rollout_length
    assert memory["state"] >= 2 * rows * (11 + 11 + 3 + 1 + 1) * 4
    assert memory["total"] == memory["dataset"] + memory["state"]


def test_memory_estimate_of_a_true_dynamics_cell_counts_the_physics_states():
    """dynamics=true: the loop also loads each row's physics state (qpos ++ qvel, 12 floats on
    hopper), and an ant cell, whose init needs them, traces (finite state bytes)."""
    def memory(dataset, dynamics):
        return cell_memory(cells.resolve("mopo", dataset, "offline", seeds=1, fingerprint="x",
                                         items=[f"dynamics={dynamics}"]))

    learned, true = memory("hopper-medium-100k", "learned"), memory("hopper-medium-100k", "true")
    assert true["dataset"] - learned["dataset"] == 100_000 * 12 * 4
    assert np.isfinite(memory("ant-medium-100k", "true")["state"])
