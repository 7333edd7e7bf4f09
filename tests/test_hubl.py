"""HUBL (offbench/hubl.py and the td3_bc_hubl, iql_hubl, cql_hubl variants) against the paper's
definition: the base algorithm, unchanged, learning from data relabeled as
r~ = r + gamma * lambda * h(s'), gamma~ = gamma * (1 - lambda), with h(s') the Monte-Carlo
return from s' written out here as a sum over each episode (not the harness's recursion)."""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench import hubl
from offbench.algorithms import EnvSpec
from offbench.data.loader import mc_returns

from conftest import TINY_DATASET
from np_reference import fixed_batch

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99
LENGTHS = np.array([30, 20, 14])  # 64 rows: fixed_batch's size
ENDS_BY_TERMINATION = (False, False, True)  # the last episode terminates, the others time out
SMALL = {"td3_bc": {}, "iql": {}, "cql": {"cql_n_actions": 4, "orthogonal_init": False}}


def episodes_batch(seed=0):
    """fixed_batch's rows as three consecutive episodes, with their G (the harness's mc_returns)
    and h(s') computed independently, as an explicit discounted sum to the episode's end."""
    batch = fixed_batch(seed=seed)
    terminal = np.zeros(LENGTHS.sum(), np.float32)
    ends = np.cumsum(LENGTHS) - 1
    terminal[ends[list(ENDS_BY_TERMINATION)]] = 1.0
    rewards = np.asarray(batch.reward, np.float64)
    h_next = np.zeros(len(rewards))
    start = 0
    for length in LENGTHS:
        for t in range(start, start + length - 1):  # the episode's last row: h(s') = 0
            later = rewards[t + 1:start + length]
            h_next[t] = np.sum(GAMMA ** np.arange(len(later)) * later)
        start += length
    g = mc_returns(np.asarray(batch.reward), LENGTHS, GAMMA)
    batch = batch.replace(terminal=jnp.asarray(terminal),
                          extra={"mc_returns": jnp.asarray(g)})
    return batch, h_next


def variant(name):
    return importlib.import_module(f"offbench_baselines.{name}_hubl")


def base_module(name):
    return importlib.import_module(f"offbench_baselines.{name}")


def make_state(name, lam):
    module = variant(name)
    cfg = module.Config(hidden=(16, 16), hubl_lambda=lam, **SMALL[name])
    state = module.init(jax.random.PRNGKey(1), SPEC, cfg)
    other = module.init(jax.random.PRNGKey(2), SPEC, cfg)  # distinct online and target critics
    return state.replace(target_critic=other.critic)


def critic_loss(name, state, batch):
    args = (state.critic, state, batch) + (() if name == "iql" else (jax.random.PRNGKey(3),))
    return base_module(name).critic_loss(*args)


@pytest.mark.parametrize("lam", [0.3, 0.8])
@pytest.mark.parametrize("name", ["td3_bc", "iql", "cql"])
def test_blended_target_is_the_papers_relabeling(name, lam):
    batch, h_next = episodes_batch()
    state = make_state(name, lam)
    loss, info = critic_loss(name, state, batch)
    # the paper's HUBL: the base algorithm (lambda 0) on relabeled rewards and discount
    relabeled = batch.replace(reward=jnp.asarray(np.asarray(batch.reward, np.float64)
                                                 + GAMMA * lam * h_next, jnp.float32))
    plain = state.replace(config=dataclasses.replace(state.config, hubl_lambda=0.0,
                                                     discount=GAMMA * (1.0 - lam)))
    expected, expected_info = critic_loss(name, plain, relabeled)
    np.testing.assert_allclose(float(loss), float(expected), rtol=2e-5)
    np.testing.assert_allclose(float(info["target_mean"]), float(expected_info["target_mean"]),
                               rtol=2e-5, atol=1e-5)
    unblended, _ = critic_loss(name, state.replace(config=dataclasses.replace(
        state.config, hubl_lambda=0.0)), batch)
    assert abs(float(loss) - float(unblended)) > 1e-3 * abs(float(unblended))  # it does act


@pytest.mark.parametrize("name", ["td3_bc", "iql", "cql"])
def test_lambda_zero_is_the_base_algorithm(name):
    batch, _ = episodes_batch()
    state = make_state(name, 0.0)
    base_cfg = base_module(name).Config(hidden=(16, 16), **SMALL[name])
    base_state = state.replace(config=base_cfg)
    # same parameters and keys: the same loss, bit for bit, with or without the returns
    a, _ = critic_loss(name, state, batch)
    b, _ = critic_loss(name, base_state, batch.replace(extra={}))
    assert float(a) == float(b)


def test_blend_by_hand():
    target = jnp.asarray([1.0, 2.0, -4.0, 3.0])
    mc = jnp.asarray([5.0, 0.0, 4.0, -jnp.inf])  # the last: no return yet (online row)
    batch = fixed_batch(n=4).replace(extra={"mc_returns": mc})
    cfg = variant("td3_bc").Config(hubl_lambda=0.25)
    np.testing.assert_allclose(np.asarray(hubl.blend(target, batch, cfg)),
                               [0.75 * 1 + 0.25 * 5, 0.75 * 2, 0.75 * -4 + 0.25 * 4, 3.0])
    assert hubl.blend(target, batch, base_module("td3_bc").Config()) is target


def test_bad_lambda_and_missing_returns_are_clear_errors():
    module = variant("iql")
    with pytest.raises(ValueError, match=r"hubl_lambda must be in \[0, 1\].*got 1.5"):
        module.init(jax.random.PRNGKey(0), SPEC, module.Config(hubl_lambda=1.5))
    state = make_state("iql", 0.5)
    with pytest.raises(ValueError, match="needs batch.extra\\['mc_returns'\\]"):
        critic_loss("iql", state, fixed_batch())


def test_harness_gives_returns_in_the_units_learned(minari_root):
    from offbench.data import load
    from offbench.loops import offline

    module = variant("iql")  # IQL scales rewards by the return range: G must be scaled too
    prepared = offline.prepare(module, module.Config(), load(TINY_DATASET))
    lengths = load(TINY_DATASET).metadata["episode_lengths"]
    reward = np.asarray(prepared.arrays["reward"])
    assert prepared.reward_scale != 1.0
    np.testing.assert_allclose(np.asarray(prepared.arrays["mc_returns"]),
                               mc_returns(reward, lengths, GAMMA), rtol=1e-6)


@pytest.mark.parametrize("name", ["td3_bc", "iql", "cql"])
def test_offbench_check(name):
    from offbench.harness.check import check

    assert check(f"{name}_hubl", ["hidden=16,16", "batch_size=32"], updates=3,
                 log=lambda *_: None)


def test_offbench_run_on_a_scarce_variant(minari_root, tmp_path, capsys):
    from offbench import cli

    flags = ["--seeds", "2", "--updates", "100", "--eval-every", "100", "--eval-episodes", "2",
             "--episode-length", "20", "--backend", "mujoco", "--set", "hidden=32,32",
             "--set", "batch_size=32", "--set", "hubl_lambda=0.3"]
    out = tmp_path / "run"
    assert cli.main(["run", "td3_bc_hubl", TINY_DATASET + "+episodes=0.5", *flags,
                     "--out", str(out)]) == 0
    assert "normalized score over 2 seeds" in capsys.readouterr().out
