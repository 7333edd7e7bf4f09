"""PointMaze datasets in the style of D4RL's maze2d: one long noisy trajectory of a PD waypoint
controller driving the point mass to random goals, cut into episodes of the task.

Source: D4RL `scripts/generation/generate_maze2d_datasets.py` and
`d4rl/pointmaze/waypoint_controller.py` (`WaypointController`, `--noisy`).

Planner. The maze's open cells form a 4-connected grid graph; `next_hops(grid)[c, g]` is the
neighbour of cell c one step closer to cell g along a shortest path (breadth-first search from
g; ties go to the first of up, down, left, right). D4RL runs 50 sweeps of Q-iteration on the same
graph and follows its argmax: the same paths up to ties. When a goal is set, the first waypoint
is the next cell after the agent's own cell on the path; each reached waypoint is replaced by the
next cell on the path from it, so the waypoints are D4RL's list, computed as they are needed.

Controller (D4RL's gains). A waypoint is its cell's centre moved by D4RL's jitter, which
subtracts U(0, 0.2) cells from both of D4RL's grid coordinates (row, column), i.e. in this
frame x - 0.2 u1 * s, y + 0.2 u2 * s (s: cell size); the goal's cell has no waypoint: the target
is the goal itself. With p the agent's (x, y), v its velocity and w the target:

    a = clip(10 (w - p) - 1 v, -1, 1),    action = clip(a + 0.5 n, -1, 1),  n ~ N(0, I),

and the waypoint advances once |p - w| < 0.1 (D4RL's second test, a displacement below 0.1 per
step, always holds for the point mass: its speed is clipped to 5, 0.05 per 0.01 s step).

Data. One trajectory (no resets) of `size` steps of the task on the C backend with every open
cell a goal (`goals="any"`), starting from a reset of that task. Observations, rewards and
success are the task's own (agent state ++ goal; reward 1 within 0.45 of the goal). An episode
ends when the goal is reached (a termination, as in the task's evaluation episodes, which end at
the first success) or after the task's time limit (300/600/800 steps, D4RL maze2d's
max_episode_steps) without reaching it (a timeout); either way a new goal is drawn, uniform over
the open cells plus U(-0.25, 0.25) cells of noise and farther than the goal radius from the
agent (Gymnasium-Robotics' `update_goal`), and the agent carries on from where it is. The next
episode's first observation is the same physics state with the new goal.

Kind `fixed` (ids `pointmaze-medium-fixed[-SIZE]`): the same trajectory (the same key, so the
same states and actions step for step) relabeled to the task's evaluation goal, as D4RL
evaluates maze2d and AntMaze: one fixed goal cell at evaluation while the data was collected
towards random goals, the data's rewards relabeled w.r.t. that goal (D4RL
`scripts/relabel_maze2d_rewards.py`, `relabel_antmaze_rewards.py`). Success then needs stitching
pieces of trajectories that were heading elsewhere, which is where offline RL beats BC (with the
maze2d kind's own goals in the observation the controller succeeds ~always and BC scores ~90).
`relabel_to_eval_goal` cuts the trajectory anew: each episode gets its own draw of the
evaluation goal, the eval map's goal cell centre plus U(-0.25, 0.25) cells on x and y (exactly
the distribution the `goals="eval"` env draws at each evaluation reset), written into the goal
part of its observations and next observations; the reward is 1 on the first transition whose
next position is within goal_radius of it, a termination (evaluation episodes end at the first
success); an episode without success ends after the task's time limit, a timeout. The next
episode starts where the last ended, with a new draw. Why a draw per episode and not the cell
centre: the policy's input then has the distribution it meets at evaluation; a constant goal
would have zero variance in the data, and the observation standardization most algorithms use
(std + 1e-3) would turn the evaluation's goal noise (up to 0.25) into inputs of +-250. Goal
draws: NumPy PCG64 seeded by (seed, crc32("fixed")). Declared differences from D4RL: D4RL
keeps no goal in the observation (maze2d: [x, y, vx, vy]; ours has the task's goal slots); its
relabeling scripts replace the rewards only (the ends stay those of the collection's goals);
after a success the agent is often still inside the goal radius, so many episodes here are one
step long (with reward 1: the recomputation is exact), which the datasets report's success
fraction counts.

Declared differences from D4RL maze2d: Gymnasium-Robotics' maze frame, noise and goal radius
(0.45, D4RL 0.5); the goal is reached on entering the goal radius (D4RL's controller needs 0.1 of
the goal cell's centre); D4RL flags a reached goal and a time limit alike (one `done`), here
they are a termination and a timeout; D4RL's generator records the stale pre-goal state again
after each goal (it skips `s = ns`): not reproduced.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

import offbench.envs as envs
from offbench.envs.maze import cell_xy
from offbench.envs.maze_spec import WALL

KIND = "maze2d"
FIXED_KIND = "fixed"  # D4RL-style: relabeled to the evaluation goal (below)
KINDS = (KIND, FIXED_KIND)
BACKEND = "mujoco"  # the C engine: the datasets are built on CPU, one step at a time


@dataclasses.dataclass(frozen=True)
class WaypointController:
    """D4RL maze2d's waypoint controller and its `--noisy` action noise (values: D4RL's)."""

    p_gain: float = 10.0
    d_gain: float = -1.0
    solve_thresh: float = 0.1  # a waypoint is reached within this distance (cells)
    jitter: float = 0.2  # waypoints move by up to this much (cells), D4RL's direction
    noise: float = 0.5  # std of the Gaussian action noise


CONTROLLER = WaypointController()


# -- planner --------------------------------------------------------------------------------------

def next_hops(grid: tuple[str, ...]) -> np.ndarray:
    """[cells, cells] int32 over cells indexed i * width + j: next_hops[c, g] is the open
    neighbour of c one step closer to g on a shortest path, c itself if c == g, if c is a wall
    or if g cannot be reached from c."""
    height, width = len(grid), len(grid[0])
    n = height * width
    table = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, n))
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right

    def neighbours(c):
        i, j = divmod(c, width)
        for di, dj in steps:
            a, b = i + di, j + dj
            if 0 <= a < height and 0 <= b < width and grid[a][b] != WALL:
                yield a * width + b

    for g in range(n):
        if grid[g // width][g % width] == WALL:
            continue
        dist = {g: 0}
        queue = deque([g])
        while queue:
            c = queue.popleft()
            for nb in neighbours(c):
                if nb not in dist:
                    dist[nb] = dist[c] + 1
                    queue.append(nb)
        for c, d in dist.items():
            if d > 0:
                table[c, g] = next(nb for nb in neighbours(c) if dist.get(nb) == d - 1)
    return table


@dataclasses.dataclass(frozen=True)
class Maze:
    """The planner's view of a maze: cell geometry and the next-hop table, as JAX arrays."""

    height: int
    width: int
    scaling: float
    centres: jax.Array  # [cells, 2] cell centres (walls included)
    hops: jax.Array  # [cells, cells] next_hops

    @classmethod
    def of(cls, env: envs.MazeEnv) -> Maze:
        grid, s = env.grid, env.spec.maze_size_scaling
        centres = np.array([cell_xy(grid, s, divmod(c, len(grid[0])))
                            for c in range(len(grid) * len(grid[0]))], np.float32)
        return cls(len(grid), len(grid[0]), s, jnp.asarray(centres),
                   jnp.asarray(next_hops(grid)))

    def cell(self, xy: jax.Array) -> jax.Array:
        """Index of the cell holding xy (offbench.envs.maze.xy_cell, clipped to the grid)."""
        s = self.scaling
        i = jnp.floor((self.height * s / 2 - xy[1]) / s).astype(jnp.int32)
        j = jnp.floor((xy[0] + self.width * s / 2) / s).astype(jnp.int32)
        return jnp.clip(i, 0, self.height - 1) * self.width + jnp.clip(j, 0, self.width - 1)


# -- controller -----------------------------------------------------------------------------------

def _target(maze: Maze, cell: jax.Array, goal: jax.Array, key: jax.Array,
            ctrl: WaypointController) -> jax.Array:
    """Where the controller steers for waypoint `cell`: its jittered centre, or the goal itself
    in the goal's cell."""
    u = jax.random.uniform(key, (2,))
    jittered = maze.centres[cell] + ctrl.jitter * maze.scaling * jnp.array([-u[0], u[1]])
    return jnp.where(cell == maze.cell(goal), goal, jittered)


def plan(maze: Maze, position: jax.Array, goal: jax.Array, key: jax.Array,
         ctrl: WaypointController = CONTROLLER) -> tuple[jax.Array, jax.Array]:
    """(waypoint cell, target) for a new goal: the next cell on the path from the agent's."""
    cell = maze.hops[maze.cell(position), maze.cell(goal)]
    return cell, _target(maze, cell, goal, key, ctrl)


def control(maze: Maze, waypoint: tuple[jax.Array, jax.Array], position: jax.Array,
            velocity: jax.Array, goal: jax.Array, key: jax.Array,
            ctrl: WaypointController = CONTROLLER
            ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The noiseless PD action towards the current target, and the waypoint for the next step
    (advanced along the path once the target is within solve_thresh)."""
    cell, target = waypoint
    action = jnp.clip(ctrl.p_gain * (target - position) + ctrl.d_gain * velocity, -1.0, 1.0)
    goal_cell = maze.cell(goal)
    reached = (cell != goal_cell) & (jnp.linalg.norm(position - target) < ctrl.solve_thresh)
    following = maze.hops[cell, goal_cell]
    new_cell = jnp.where(reached, following, cell)
    new_target = jnp.where(reached, _target(maze, following, goal, key, ctrl), target)
    return action, (new_cell, new_target)


def noisy(action: jax.Array, key: jax.Array, ctrl: WaypointController = CONTROLLER
          ) -> jax.Array:
    return jnp.clip(action + ctrl.noise * jax.random.normal(key, action.shape), -1.0, 1.0)


def controller_policy(env: envs.MazeEnv, ctrl: WaypointController = CONTROLLER,
                      noise: bool = False):
    """The controller as (init(state, key) -> carry, act(carry, state, key) -> (action, carry))
    for one env of `env` (a bare MazeEnv); the carry is the waypoint."""
    maze = Maze.of(env)

    def init(state, key):
        return plan(maze, state.pipeline_state.qpos[:2], state.info["goal"], key, ctrl)

    def act(carry, state, key):
        k_wp, k_noise = jax.random.split(key)
        physics = state.pipeline_state
        action, carry = control(maze, carry, physics.qpos[:2], physics.qvel[:2],
                                state.info["goal"], k_wp, ctrl)
        return (noisy(action, k_noise, ctrl) if noise else action), carry

    return init, act


# -- the dataset stream ---------------------------------------------------------------------------

def stream(task: str, steps: int, key: jax.Array, ctrl: WaypointController = CONTROLLER
           ) -> dict[str, np.ndarray]:
    """`steps` transitions of one trajectory, as host arrays shaped [1, steps, ...] (the
    layout of `offbench.loops.rollout.collect`): observations, actions, rewards,
    next_observations, terminals (goal reached), timeouts (time limit without it)."""
    env = envs.make(task, BACKEND, wrap=False, goals="any")
    low, high = env.action_bounds
    assert np.all(np.asarray(low) == -1.0) and np.all(np.asarray(high) == 1.0)
    init, act = controller_policy(env, ctrl, noise=True)
    limit = env.spec.episode_length
    k_reset, k_plan, k_run = jax.random.split(key, 3)

    @jax.jit
    def run(k_reset, k_plan, k_run):
        state = env.reset(k_reset)

        def body(carry, t):
            state, waypoint, elapsed = carry
            k_act, k_goal, k_replan = jax.random.split(jax.random.fold_in(k_run, t), 3)
            action, waypoint = act(waypoint, state, k_act)
            nxt = env.step(state, action)
            success = nxt.metrics["success"]
            elapsed = elapsed + 1
            timeout = (elapsed >= limit) & (success == 0)
            end = (success > 0) | timeout
            out = {"observations": state.obs, "actions": action, "rewards": nxt.reward,
                   "next_observations": nxt.obs, "terminals": success,
                   "timeouts": timeout.astype(jnp.float32)}
            physics = nxt.pipeline_state
            goal = jnp.where(end, env.redraw_goal(k_goal, physics.qpos[:2]), nxt.info["goal"])
            state = nxt.replace(obs=env.observation(physics, goal), done=jnp.zeros_like(nxt.done),
                                info={**nxt.info, "goal": goal})
            fresh = init(state, k_replan)
            waypoint = jax.tree.map(lambda new, old: jnp.where(end, new, old), fresh, waypoint)
            return (state, waypoint, jnp.where(end, 0, elapsed)), out

        carry = (state, init(state, k_plan), jnp.zeros((), jnp.int32))
        _, out = jax.lax.scan(body, carry, jnp.arange(steps))
        return out

    out = jax.device_get(run(k_reset, k_plan, k_run))
    return {k: np.asarray(v)[None] for k, v in out.items()}


def success_rate(task: str, episodes: int, key: jax.Array, noise: bool = False,
                 goals: str = "eval", ctrl: WaypointController = CONTROLLER) -> float:
    """The fraction of `episodes` episodes of the task (C backend, its time limit, ending at
    the first success) in which the controller reaches the goal."""
    env = envs.make(task, BACKEND, auto_reset=False, goals=goals)
    init, act = controller_policy(env.unwrapped, ctrl, noise)
    k_reset, k_plan, k_run = jax.random.split(key, 3)

    @jax.jit
    def run(k_reset, k_plan, k_run):
        state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        waypoint = jax.vmap(init)(state, jax.random.split(k_plan, episodes))

        def body(carry, t):
            state, waypoint, reached = carry
            keys = jax.random.split(jax.random.fold_in(k_run, t), episodes)
            action, waypoint = jax.vmap(act)(waypoint, state, keys)
            state = jax.vmap(env.step)(state, action)
            return (state, waypoint, jnp.maximum(reached, state.metrics["success"])), None

        carry = (state, waypoint, jnp.zeros(episodes))
        (_, _, reached), _ = jax.lax.scan(body, carry, jnp.arange(env.episode_length))
        return reached.mean()

    return float(run(k_reset, k_plan, k_run))


def dataset_key(seed: int) -> jax.Array:
    """The controller trajectory's key: the same for both kinds (`fixed` relabels `maze2d`)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(KIND.encode()))


# -- the fixed-goal kind (D4RL's evaluation goal) -------------------------------------------------

def eval_goal(task: str) -> tuple[np.ndarray, float]:
    """(centre of the task's single evaluation goal cell, the goal noise's half-width in
    metres): the goal the `goals="eval"` env draws at each reset is centre + U(-w, w)^2."""
    env = envs.make(task, BACKEND, wrap=False, goals="eval")
    if len(env.goal_cells) != 1:
        raise ValueError(f"task '{task}' has {len(env.goal_cells)} evaluation goal cells; the "
                         f"'{FIXED_KIND}' kind needs exactly one")
    return (np.asarray(env.goal_cells[0], np.float32),
            float(env.spec.position_noise_range * env.spec.maze_size_scaling))


def goal_rng(seed: int) -> np.random.Generator:
    """The relabeling's goal draws: NumPy's PCG64, seeded by (seed, crc32 of the kind)."""
    return np.random.default_rng([seed, zlib.crc32(FIXED_KIND.encode())])


def draw_goal_and_hit(rng: np.random.Generator, centre: np.ndarray, noise: float,
                      positions: np.ndarray, radius: np.float32) -> tuple[np.ndarray, int | None]:
    """One relabeled episode's goal (centre + U(-noise, noise)^2, drawn from `rng`) and the
    index of the first of `positions` within `radius` of it (None: none is), shared by the
    PointMaze `fixed` kind and AntMaze's kinds (offbench/data/antmaze.py)."""
    goal = (centre + rng.uniform(-noise, noise, 2)).astype(np.float32)
    window = positions - goal
    hit = np.flatnonzero(np.sqrt(np.sum(window * window, axis=1)) <= radius)
    return goal, (int(hit[0]) if hit.size else None)


def relabel_to_eval_goal(task: str, data: dict[str, np.ndarray], seed: int
                         ) -> dict[str, np.ndarray]:
    """The `fixed` kind from a `stream` of the `maze2d` kind ([1, steps, ...] arrays): the
    same states and actions, cut into new episodes, each with its own draw of the evaluation
    goal written into the goal part of its observations and next observations; the reward is
    1 on the first transition whose next position lies within goal_radius of that goal (a
    termination: the task's evaluation episodes end at the first success) and 0 elsewhere;
    an episode without success ends after the task's time limit (a timeout). The next episode
    starts where the last one ended (no reset), with a new goal draw."""
    centre, noise = eval_goal(task)
    spec = envs.get_spec(task)
    radius, limit = np.float32(spec.goal_radius), spec.episode_length
    rng = goal_rng(seed)
    obs = np.array(data["observations"][0])
    nxt = np.array(data["next_observations"][0])
    steps = len(obs)
    position = nxt[:, :2]
    rewards = np.zeros(steps, np.float32)
    terminals = np.zeros(steps, np.float32)
    timeouts = np.zeros(steps, np.float32)
    t = 0
    while t < steps:
        window = position[t:t + limit]
        goal, hit = draw_goal_and_hit(rng, centre, noise, window, radius)
        if hit is not None:
            end = t + hit
            rewards[end] = terminals[end] = 1.0
        else:
            end = t + len(window) - 1
            timeouts[end] = float(len(window) == limit)  # a cut by the data's end is not one
        obs[t:end + 1, 4:6] = goal
        nxt[t:end + 1, 4:6] = goal
        t = end + 1
    return {"observations": obs[None], "actions": np.asarray(data["actions"]),
            "rewards": rewards[None], "next_observations": nxt[None],
            "terminals": terminals[None], "timeouts": timeouts[None]}


def record(kind: str = KIND) -> dict:
    """What a dataset's build record says about its behaviour (compared on rebuilds)."""
    out = {"controller": "offbench.data.maze2d (D4RL maze2d WaypointController)",
           **dataclasses.asdict(CONTROLLER)}
    if kind == FIXED_KIND:
        out["goals"] = ("eval: per-episode draws of the evaluation goal (cell centre + the "
                        "env's goal noise), rewards and ends relabeled (maze2d.py)")
    return out
