"""Parity with Gymnasium's own v5 environments (the C-MuJoCo oracle), step by step.

Each step starts both simulators from identical float32 states (Gymnasium's state, rounded,
written back into Gymnasium), applies the same random action, and compares observation,
reward, every reward term, and termination. Episodes that terminate are reset in Gymnasium and
the reset observation is compared too, so reset semantics (zero contact forces, root position)
are covered as well.
"""

import numpy as np
import pytest

from conftest import TASKS, bare_env
from gym_oracle import make_gym, physics_of, round_state_to_float32

STEPS = 150
# Relative error, measured against max(1, |value|). The C backend runs the same engine in float64
# and only rounds its outputs to float32. MJX computes in float32 throughout, so contacts pick up
# float32 error in the constraint solver (measured worst cases: 3e-4 in obs, 3e-5 in reward).
TOLERANCE = {"mujoco": 1e-5, "mjx": 2e-3}
METRIC_KEYS = {"x_velocity": "x_velocity", "reward_forward": "reward_forward",
               "reward_ctrl": "reward_ctrl", "reward_survive": "reward_survive",
               "reward_contact": "reward_contact", "y_velocity": "y_velocity",
               "x_position": "x_position"}


def rel_err(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))))


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
@pytest.mark.parametrize("task", TASKS)
def test_step_matches_gymnasium(task, backend):
    env, step, _ = bare_env(task, backend)
    gym_env = make_gym(env)
    reset_obs, _ = gym_env.reset(seed=0)
    template = env.reset(np.zeros(2, np.uint32))
    rng = np.random.default_rng(0)
    lo, hi = env.action_bounds
    tol = TOLERANCE[backend]
    just_reset, resets, worst = True, 0, 0.0
    for t in range(STEPS):
        round_state_to_float32(gym_env)
        if just_reset:  # our reset-time physics state, built from Gymnasium's reset qpos/qvel
            physics = env.initial_physics(gym_env.data.qpos, gym_env.data.qvel)
            assert rel_err(env.observation(physics), reset_obs) < 1e-6, f"reset obs, step {t}"
        else:
            physics = physics_of(env, gym_env)
        action = rng.uniform(lo, hi).astype(np.float32)
        obs, reward, terminated, truncated, info = gym_env.step(action)
        ours = step(template.replace(pipeline_state=physics), action)

        errors = {"obs": rel_err(ours.obs, obs), "reward": rel_err(ours.reward, reward)}
        for key, gym_key in METRIC_KEYS.items():
            if key in ours.metrics:
                errors[key] = rel_err(ours.metrics[key], info[gym_key])
        bad = {k: v for k, v in errors.items() if v > tol}
        assert not bad, f"{task}/{backend} step {t}: errors above {tol}: {bad}"
        assert bool(ours.done) == terminated, f"{task}/{backend} step {t}: termination differs"
        assert not truncated  # the bare env has no time limit, like gymnasium's unwrapped env
        worst = max(worst, *errors.values())
        just_reset = terminated
        if terminated:
            reset_obs, _ = gym_env.reset(seed=1000 + t)
            resets += 1
    # Keep the test honest: the random policy must end some hopper/walker episodes, so that
    # termination and reset were actually compared.
    if task in ("hopper", "walker2d"):
        assert resets >= 1
    print(f"{task}/{backend}: worst relative error {worst:.2e} over {STEPS} steps, {resets} resets")


@pytest.mark.parametrize("task", TASKS)
def test_free_running_trajectory_tracks_gymnasium(task):
    """No re-sync: our C backend carries its own float32 state (and, for rollout-stepped tasks,
    no solver warm start between env steps) along Gymnasium's trajectory from the same reset.
    Rounding differences grow along a chaotic trajectory, so this checks a short horizon
    (25 steps) with a loose tolerance; a wrong carried state would break it at once."""
    env, step, _ = bare_env(task, "mujoco")
    gym_env = make_gym(env)
    gym_env.reset(seed=3)
    round_state_to_float32(gym_env)
    state = env.reset(np.zeros(2, np.uint32)).replace(
        pipeline_state=env.initial_physics(gym_env.data.qpos, gym_env.data.qvel))
    rng = np.random.default_rng(3)
    lo, hi = env.action_bounds
    for t in range(25):
        action = rng.uniform(lo, hi).astype(np.float32)
        obs, reward, terminated, _, _ = gym_env.step(action)
        state = step(state, action)
        assert rel_err(state.obs, obs) < 1e-3, f"{task} step {t}: {rel_err(state.obs, obs)}"
        assert rel_err(state.reward, reward) < 1e-3
        assert bool(state.done) == terminated
        if terminated:
            break


@pytest.mark.parametrize("task", ["hopper", "walker2d", "ant"])
def test_health_bounds_match_gymnasium_exactly(task):
    """States placed on and around every healthy-range bound (open for Hopper/Walker2d, closed
    for Ant, plus Ant's finiteness check): our is_healthy equals Gymnasium's on each."""
    env, _, _ = bare_env(task, "mujoco")
    gym_env = make_gym(env)
    gym_env.reset(seed=0)
    s = env.spec
    z_index = 2 if task == "ant" else 1
    probes = []
    for index, bounds in ((z_index, s.healthy_z_range), (2, s.healthy_angle_range)):
        if bounds is None or (task == "ant" and index == 2 and bounds is s.healthy_angle_range):
            continue
        for bound in bounds:
            if np.isfinite(bound):
                for delta in (-1e-3, 0.0, 1e-3):
                    probes.append((index, np.float32(bound + delta)))
    if s.healthy_state_range is not None:
        probes += [(4, np.float32(99.0)), (4, np.float32(100.0)), (4, np.float32(101.0))]
    cases = [(i, v, None) for i, v in probes]
    if s.healthy_requires_finite:
        cases.append((z_index, np.float32(0.5), np.nan))  # a NaN velocity: unhealthy
    assert len(cases) >= 6
    for index, value, qvel0 in cases:
        qpos = np.asarray(gym_env.init_qpos, np.float32).copy()
        qpos[index] = value
        if task != "ant" and index != z_index:  # keep z healthy while probing the angle
            qpos[z_index] = np.float32(1.25)
        qvel = np.zeros(gym_env.model.nv, np.float32)
        if qvel0 is not None:
            qvel[0] = qvel0
        gym_env.set_state(qpos.astype(np.float64), qvel.astype(np.float64))
        ours = bool(env.is_healthy(env.initial_physics(qpos, qvel)))
        assert ours == bool(gym_env.is_healthy), (task, index, float(value), qvel0)
