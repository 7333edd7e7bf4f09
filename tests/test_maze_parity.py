"""Parity of the maze tasks with Gymnasium-Robotics' own environments (the C-MuJoCo oracle).

* The compiled MuJoCo model (agent, wall blocks, options) equals the one Gymnasium-Robotics
  builds, field by field.
* Step by step: each step starts both simulators from identical float32 states (Gymnasium-
  Robotics' state and goal, rounded, written back), applies the same action, and compares
  observation (`observation` ++ `desired_goal`), reward, success and termination. Actions beyond
  the control range, long pushes into walls (velocity clipping) and goals placed near the agent
  (rewards, successes, terminations) are all exercised.
* Resets: goals and starts fall on the cells, with the noise and start-goal separation, that
  Gymnasium-Robotics draws, for every goal mode.
"""

import contextlib
import os

import gymnasium
import jax
import mujoco
import numpy as np
import pytest

import offbench.envs as envs
from offbench.envs.maze import cell_xy, xy_cell
from offbench.envs.maze_spec import GOAL_MODES

with open(os.devnull, "w") as _quiet, contextlib.redirect_stdout(_quiet):
    import gymnasium_robotics  # registers PointMaze/AntMaze (and prints a notice)

gymnasium.register_envs(gymnasium_robotics)

POINT_TASKS = ("pointmaze-umaze", "pointmaze-medium", "pointmaze-large")
ANT_TASKS = ("antmaze-umaze", "antmaze-medium", "antmaze-large")
TASKS = POINT_TASKS + ANT_TASKS
STEPS = {"point": 200, "ant": 100}
# As for locomotion: relative error against max(1, |value|); C backend to round-off, MJX float32.
# Point (frictionless contacts), measured worst cases 6e-8 C, 1e-5 MJX.
# Ant on MJX: MJX run in float64 reproduces C on every step of this test (wall contacts included) to
# 1e-8 (1e-12 on most steps), so what is left is float32 rounding, which the contact forces
# (`cfrc_ext` in the observation) amplify: MJX's solver gets them from qacc (force = D (aref - J
# qacc), D = 1/R large for the stiff contacts), so qacc's float32 error is multiplied by D. Here
# saturated actions held for 20 steps press joints against their limits (limit forces ~150) and legs
# hit the floor (|qacc| up to ~360): a single 0.01 s substep from C's own state then errs by 6e-2 in
# a contact force. Measured worst cases over the 100 steps (with and without wall pushes): 1.4e-3 in
# qpos/qvel, 3.4e-2 in contact forces; Ant-v5's MJX step from the same states errs exactly as much
# (Ant-v5's own test, with fresh random actions each step, stays at 3e-4). Hence a bound of their
# own for the contact forces. With the corner pushes of `corner_of_cell` the three mazes measure
# 8e-5 to 1.4e-3 in qpos/qvel and 1.7e-2 to 1.9e-2 in contact forces on MJX.
TOLERANCE = {("point", "mujoco"): 1e-6, ("point", "mjx"): 1e-4,
             ("ant", "mujoco"): 1e-5, ("ant", "mjx"): 5e-3}
FORCE_TOLERANCE = {("ant", "mujoco"): 1e-5, ("ant", "mjx"): 1e-1}


def rel_err(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))))


def gym_map(grid):
    """Our map rows as Gymnasium-Robotics' list-of-lists map."""
    return [[1 if c == "#" else 0 if c == "." else c for c in row] for row in grid]


def make_gym(env):
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return gymnasium.make(env.spec.gymnasium_id, maze_map=gym_map(env.grid),
                              continuing_task=env.continuing,
                              reset_target=env.reset_target).unwrapped


@pytest.fixture(scope="module")
def bare():
    cache = {}

    def get(task, backend, **options):
        key = (task, backend, tuple(sorted(options.items())))
        if key not in cache:
            env = envs.make(task, backend, wrap=False, **options)
            cache[key] = env, jax.jit(env.step)
        return cache[key]
    return get


def corner_of_cell(env, xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A position 1.15 m off the centre of the (4 m) cell holding xy on each axis, towards a wall
    where the cell has one on that axis. An ant in its reset pose there has its leg tips 3 cm into
    a wall: contacts well inside the 2 cm margin, not at it (at 1.1 m they sit exactly at the
    margin, a threshold that float32 MJX and float64 C decide differently)."""
    s = env.spec.maze_size_scaling
    i, j = xy_cell(env.grid, s, xy)
    signs = rng.choice([-1.0, 1.0], 2)
    for axis, (di, dj) in enumerate(((0, 1), (-1, 0))):  # +x: next column; +y: previous row
        walls = [g for g in (1, -1) if env.grid[i + g * di][j + g * dj] == "#"]
        if walls:
            signs[axis] = rng.choice(walls)
    return cell_xy(env.grid, s, (i, j)) + signs * 1.15


def flat_obs(obs: dict) -> np.ndarray:
    return np.concatenate([obs["observation"], obs["desired_goal"]])


def agent_obs(gym_env) -> np.ndarray:
    """The agent env's own observation of its current state (before the maze splits it)."""
    if hasattr(gym_env, "point_env"):
        return gym_env.point_env._get_obs()[0]
    return gym_env.ant_env._get_obs()


def wall_contacts(gym_env) -> int:
    """Contacts of the agent with a wall block in Gymnasium-Robotics' current state (its
    collision pass is redone: positions may have been set since its last step; the solver's
    state, warm start included, is left as it is)."""
    m, d = gym_env.model, gym_env.data
    mujoco.mj_kinematics(m, d)
    mujoco.mj_collision(m, d)
    names = [m.geom(int(g)).name for c in d.contact[:d.ncon] for g in c.geom]
    return sum(n.startswith("block_") for n in names)


# Fields of the compiled model that do not change dynamics (names, visuals, sites, rendering).
COSMETIC = ("name", "rgba", "site_", "mat_", "tex", "cam_", "light_", "vis", "paths", "buffer",
            "signature", "geom_matid", "geom_group", "skin", "hfield", "mesh", "body_sameframe",
            "stat")


@pytest.mark.parametrize("task", TASKS)
def test_model_matches_gymnasium_robotics(task, bare):
    env, _ = bare(task, "mujoco", goals="any")
    ours, theirs = env.model, make_gym(env).model
    compared = 0
    for field in dir(ours):
        if field.startswith("_") or any(c in field for c in COSMETIC):
            continue
        a, b = getattr(ours, field), getattr(theirs, field, None)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            assert a.shape == b.shape, field
            np.testing.assert_array_equal(a, b, err_msg=field)
            compared += 1
    for field in ("timestep", "gravity", "integrator", "iterations", "solver", "cone"):
        np.testing.assert_array_equal(getattr(ours.opt, field), getattr(theirs.opt, field))
    assert compared > 50


# Every maze on both backends; AntMaze UMaze on MJX also without the wall pushes. The mazes differ
# only in their walls (compiled models compared above), so what each case adds is its own wall
# layout under the corner pushes and MJX's contact set for it (475 / 975 / 1575 candidate contacts).
CASES = [(t, b, True) for t in TASKS for b in ("mujoco", "mjx")] + [("antmaze-umaze", "mjx", False)]


BOX_CONTACTS_MJCF = """<mujoco><worldbody>
  <geom type="box" size="{size}" euler="{euler}" margin="{m1}" contype="1" conaffinity="6"/>
  <body><freejoint/><geom type="capsule" size="{r} {h}" margin="{m2}" contype="2"/></body>
  <body><freejoint/><geom type="sphere" size="{r}" margin="{m2}" contype="4"/></body>
</worldbody></mujoco>"""


def test_mjx_box_contacts_are_the_c_engines():
    """The capsule-box and sphere-box contacts MJX uses for the mazes
    (offbench.envs.maze._mjx_box_contacts_as_in_c) are the C engine's, to round-off in float64:
    which contacts exist within the margin, their distances, positions and normals, for capsules
    and spheres placed at random around, against and inside rotated and axis-aligned boxes."""
    from offbench.envs.maze import _capsule_box, _sphere_box_local

    rng = np.random.default_rng(0)
    compared = 0
    with jax.enable_x64(True):
        capsule_box, sphere_box = jax.jit(_capsule_box), jax.jit(_sphere_box_local)
        for trial in range(40):
            size, r, h = rng.uniform(0.05, 2.0, 3), rng.uniform(0.02, 0.3), rng.uniform(0.05, 0.6)
            euler = rng.uniform(-3, 3, 3) * (trial % 3 != 0)
            m1, m2 = rng.choice([0.0, 0.01, 0.05], 2)
            model = mujoco.MjModel.from_xml_string(BOX_CONTACTS_MJCF.format(
                size=" ".join(map(str, size)), euler=" ".join(map(str, euler)), r=r, h=h,
                m1=m1, m2=m2))
            data = mujoco.MjData(model)
            for k in range(10):
                for body in range(2):  # around the box, sometimes axis-aligned or on a face
                    centre = rng.uniform(-1.3, 1.3, 3) * (size + r + h * (body == 0))
                    if k % 3 == 1:
                        axis = rng.integers(3)
                        centre[axis] = np.sign(centre[axis]) * size[axis]
                    quat = [1.0, 0, 0, 0] if k % 4 == 0 else rng.normal(size=4)
                    data.qpos[7 * body:7 * body + 7] = np.r_[centre, quat / np.linalg.norm(quat)]
                mujoco.mj_kinematics(model, data)
                mujoco.mj_collision(model, data)
                box_pos, box_mat = data.geom_xpos[0], data.geom_xmat[0].reshape(3, 3)
                for g in (1, 2):
                    theirs = [c for c in data.contact[:data.ncon] if c.geom[0] == g]
                    pos, mat = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3)
                    if g == 1:
                        dist, cpos, normal = capsule_box(pos, mat, model.geom_size[1], box_pos,
                                                         box_mat, model.geom_size[0], m1 + m2)
                    else:
                        dist, cpos, normal = sphere_box(box_mat.T @ (pos - box_pos), r,
                                                        model.geom_size[0])
                        dist, cpos, normal = (dist[None], (box_mat @ cpos + box_pos)[None],
                                              (box_mat @ normal)[None])
                    rows = np.c_[dist, cpos, normal]
                    ours = list(rows[rows[:, 0] <= m1 + m2])
                    assert len(ours) == len(theirs), (trial, k, g)
                    for c in theirs:  # C lists the contacts it keeps in the same order
                        o = ours.pop(0)
                        np.testing.assert_allclose(o, np.r_[c.dist, c.pos, c.frame[:3]],
                                                   rtol=0, atol=1e-9, err_msg=f"{trial} {k} {g}")
                        compared += 1
    assert compared > 300


@pytest.mark.parametrize(("task", "backend", "walls"), CASES)
def test_step_matches_gymnasium_robotics(task, backend, walls, bare):
    env, step = bare(task, backend)
    gym_env = make_gym(env)
    obs, _ = gym_env.reset(seed=0)
    template = env.reset(jax.random.key(0))
    rng = np.random.default_rng(0)
    tol = TOLERANCE[env.spec.agent, backend]
    point = env.spec.agent == "point"
    just_reset, worst, counts = True, {}, {"reward": 0, "terminated": 0, "fast": 0, "wall": 0}
    action = np.zeros(env.action_size, np.float32)
    for t in range(STEPS[env.spec.agent]):
        d = gym_env.data
        if walls and not point and t % 5 == 4:  # the ant against a corner of its cell: walls
            d.qpos[:2] = corner_of_cell(env, d.qpos[:2], rng)
        if point and t % 11 == 5:  # beyond the velocity clip (PointEnv clips |qvel| to 5)
            d.qvel[:] = rng.uniform(-8.0, 8.0, d.qvel.size)
        for field in (d.qpos, d.qvel, d.qacc_warmstart):
            field[:] = field.astype(np.float32)
        if t % (7 if point else 5) == 3:  # a goal near the agent: rewards, ends of episodes
            gym_env.goal = d.qpos[:2] + rng.uniform(-0.6, 0.6, 2)
        gym_env.goal = gym_env.goal.astype(np.float32).astype(np.float64)
        physics = env.initial_physics(d.qpos, d.qvel)
        if just_reset:
            expected = flat_obs(gym_env._get_obs(agent_obs(gym_env)))
            assert rel_err(env.observation(physics, gym_env.goal), expected) < 1e-6
        else:
            physics = physics.replace(qacc_warmstart=np.asarray(d.qacc_warmstart, np.float32))
        if t % 20 == 0:  # hold a direction for 20 steps: walls and the velocity clip are hit
            action = rng.uniform(-1.5, 1.5, env.action_size).astype(np.float32)
        counts["fast"] += int(np.abs(d.qvel).max() > 5.0)
        touching = wall_contacts(gym_env) > 0  # at the start of the step, or at its end (below)
        state = template.replace(pipeline_state=physics,
                                 info={**template.info, "goal": np.float32(gym_env.goal)})
        obs, reward, terminated, truncated, info = gym_env.step(action)
        ours = step(state, action)
        counts["wall"] += int(touching or wall_contacts(gym_env) > 0)
        theirs, ours_obs = flat_obs(obs), np.asarray(ours.obs)
        errors = {"reward": rel_err(ours.reward, reward)}
        if point:
            errors["obs"] = rel_err(ours_obs, theirs)
        else:  # [qpos[2:], qvel, contact forces, goal]
            forces = slice(env.model.nq - 2 + env.model.nv, -2)
            state = np.r_[0:forces.start, theirs.size - 2:theirs.size]
            errors["obs"] = rel_err(ours_obs[state], theirs[state])
            errors["forces"] = rel_err(ours_obs[forces], theirs[forces])
        limits = {k: FORCE_TOLERANCE[env.spec.agent, backend] if k == "forces" else tol
                  for k in errors}
        bad = {k: v for k, v in errors.items() if v > limits[k]}
        assert not bad, f"{task}/{backend} step {t}: errors above {limits}: {bad}"
        assert bool(ours.info["success"]) == info["success"], f"step {t}"
        assert bool(ours.done) == terminated and not truncated, f"step {t}"
        for k, v in errors.items():
            worst[k] = max(worst.get(k, 0.0), v)
        counts["reward"] += int(reward > 0)
        counts["terminated"] += int(terminated)
        just_reset = terminated
        if terminated:
            gym_env.reset(seed=1000 + t)
    # keep the test honest: rewards, terminations and the velocity clip were all exercised
    assert counts["reward"] >= 5 and counts["terminated"] >= 5, counts
    assert counts["wall"] >= 10 or not walls, counts
    assert counts["fast"] >= 1 or not point, counts
    print(f"{task}/{backend}: worst relative errors {worst}, {counts}")


@pytest.mark.parametrize("task", POINT_TASKS)
def test_free_running_trajectory_tracks_gymnasium_robotics(task, bare):
    """No re-sync: our C backend carries its own float32 state along Gymnasium-Robotics'
    trajectory from the same reset (continuing task, fixed goal) for 100 steps."""
    env, step = bare(task, "mujoco", goals="any", continuing=True)
    gym_env = make_gym(env)
    gym_env.reset(seed=3)
    d = gym_env.data
    for field in (d.qpos, d.qvel):
        field[:] = field.astype(np.float32)
    gym_env.goal = gym_env.goal.astype(np.float32).astype(np.float64)
    template = env.reset(jax.random.key(0))
    state = template.replace(pipeline_state=env.initial_physics(d.qpos, d.qvel),
                             info={**template.info, "goal": np.float32(gym_env.goal)})
    rng = np.random.default_rng(3)
    for t in range(100):
        if t % 10 == 0:
            action = rng.uniform(-1, 1, env.action_size).astype(np.float32)
        obs, reward, terminated, _, _ = gym_env.step(action)
        state = step(state, action)
        assert rel_err(state.obs, flat_obs(obs)) < 1e-4, f"{task} step {t}"
        assert float(state.reward) == reward and not terminated and not bool(state.done)


@pytest.mark.parametrize("task", POINT_TASKS + ("antmaze-medium",))
def test_reset_draws_what_gymnasium_robotics_draws(task, bare):
    """For each goal mode: the cells our resets put goals and starts on are the cells
    Gymnasium-Robotics uses, with the same noise box and start-goal separation."""
    for goals in GOAL_MODES:
        if goals == "diverse" and envs.get_spec(task).diverse_map is None:
            continue
        env, _ = bare(task, "mujoco", goals=goals)
        s = env.spec.maze_size_scaling
        noise = env.spec.position_noise_range * s
        states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 2000))
        goal = np.asarray(states.info["goal"])
        start = np.asarray(states.pipeline_state.qpos[:, :2])
        assert np.all(np.asarray(states.pipeline_state.qvel) == 0)

        def cells_of(points, centres, noise=noise):
            gap = np.abs(points[:, None, :] - centres[None]).max(-1)
            assert np.all(gap.min(1) <= noise + 1e-6), "a point off its cell's noise box"
            return gap.argmin(1)

        goal_cell = cells_of(goal, env.goal_cells)
        start_cell = cells_of(start, env.reset_cells)
        far = np.linalg.norm(env.reset_cells[start_cell] - goal, axis=-1)
        assert np.all(far > 0.5 * s), "start cell too close to the goal"
        # the oracle's cells: its resets land on the same goal and start cells
        gym_env = make_gym(env)
        theirs_goal, theirs_start = [], []
        for seed in range(300):
            obs, _ = gym_env.reset(seed=seed)
            theirs_goal.append(obs["desired_goal"])
            theirs_start.append(obs["achieved_goal"])
        gym_goal_cells = set(cells_of(np.array(theirs_goal), env.goal_cells))
        gym_start_cells = set(cells_of(np.array(theirs_start), env.reset_cells))
        assert gym_goal_cells == set(goal_cell), goals
        assert gym_start_cells <= set(start_cell), goals
        if len(env.goal_cells) == 1:
            assert gym_start_cells == set(start_cell), goals
