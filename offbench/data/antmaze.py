"""AntMaze datasets in the style of D4RL's: an ant navigation controller following the maze
planner's waypoints with action noise, episodes of 1000 steps from starts and towards goals set
by the kind, rewards relabeled to the task's evaluation goal.

Source: D4RL `scripts/generation/generate_ant_maze_datasets.py` (`--noisy`: Gaussian action
noise of std 0.2, clipped to [-1, 1]; `--max_episode_steps 1000`; `--multi_start`) and
`d4rl/locomotion/maze_env.py` (`create_navigation_policy`, the maps U_MAZE, BIG_MAZE,
HARDEST_MAZE), relabeled as `scripts/relabel_antmaze_rewards.py` relabels them.

Kinds (ids `antmaze-umaze`, `antmaze-umaze-diverse`, `antmaze-medium-play`,
`antmaze-medium-diverse`, `antmaze-large-play`, `antmaze-large-diverse`, with -SIZE variants):
* `play`: every collection episode starts in the evaluation map's start cell ('r') and heads for
  a goal drawn among hand-picked goal cells: D4RL's BIG_MAZE / HARDEST_MAZE 'G' cells, which are
  the task's `diverse_map` goal cells (Gymnasium-Robotics' `_Diverse_G` maps: the same cells);
  antmaze-umaze has no such map and takes its evaluation goal cell (D4RL's U_MAZE: the same),
  so umaze's `play` is D4RL's `antmaze-umaze` and is its default kind (left out of the id).
* `diverse`: start and goal uniform over the open cells (the env's `goals="any"` reset, as D4RL's
  `--multi_start` with goals anywhere).
Starts and goals carry the task's reset noise (U(-0.25, 0.25) cells on x and y).

The controller (tasks/policies/ant-nav/, `NAV`): offbench's SAC trained on the waypoint task
`ant-waypoint` (offbench/envs/waypoint.py: Ant-v5 running to waypoints 4 m apart with left,
straight and right turns, on open ground, C backend; `make policies`), chosen among its
snapshots by success in the three mazes (`select`; the record and the measurements:
tasks/policies/ant-nav/policies.json). It acts on the state seen from a frame turned towards
the current waypoint (`heading_observation`, as in its training task): AntMaze's ant is Ant-v5's
model, frame skip and agent observation, so the waypoint task's policy drives it unchanged. The
waypoint is D4RL's (`create_navigation_policy`): the centre of the next cell on a shortest path
from the ant's cell (`maze2d.Maze`'s planner), or the goal itself from the goal's cell and its
neighbour on the path. `NavController.heading_rate` can limit how fast the observed heading
follows the waypoint's bearing (rad per step); the trained policy saw the bearing itself (inf).

Data. `NUM_ENVS` parallel streams on the C backend; each runs collection episodes of
`EPISODE_STEPS` = 1000 steps (D4RL's) from resets of the kind's env (`continuing=True`: the ant
carries on at its goal, as in D4RL's collection). Actions: the stochastic actor's sample plus
N(0, 0.2) noise, clipped (D4RL: rlkit's exploration policy plus `--noisy`). Relabeling (as the
PointMaze `fixed` kind, maze2d.relabel_to_eval_goal): each collection episode is cut into
episodes, each with its own draw of the evaluation goal (eval goal cell centre + the env's goal
noise, NumPy PCG64 seeded by (seed, crc32(kind))) written into the observations' goal slots
(the last two); reward 1 on the first transition whose next position is within goal_radius of
it (a termination), 0 elsewhere; an episode without success ends with its collection episode:
a termination if the ant flipped over, else a timeout at 1000 steps. Normalized score = 100 x
success rate (reference scores 0 and 1).

Declared differences from D4RL:
* The controller is a waypoint-following SAC trained on open ground (no walls) and shown its
  waypoint as a heading, not D4RL's goal-conditioned SAC trained in its maze environment; it
  still flips over on some turns, more often among walls (success and flips per maze are
  recorded in tasks/policies/ant-nav/policies.json).
* A collection episode also ends when the ant has flipped over (its torso's z axis points down),
  as a termination with reward 0, and the next one starts from a reset: D4RL keeps recording a
  stuck ant until the 1000 steps are up. A termination because the ant cannot get up again:
  from a flipped state the task's return is 0 whatever follows, which is what a terminal
  transition says (and a flip is then a whole episode for the return statistics and the
  harness's return-range reward scale, where a short timeout would not be).
* Waypoints are cell centres without D4RL's per-step uniform jitter; D4RL's goal sampler adds
  U(0, 0.25) cells of one-sided noise, here the env's symmetric U(-0.25, 0.25).
* Observations are AntMaze's (agent ++ goal, with contact forces; D4RL: qpos and qvel without
  contact forces, 29 entries); Gymnasium-Robotics' maze frame, goal radius 0.45 (D4RL 0.5).
* Episodes are cut at each success w.r.t. the evaluation goal (terminations), so many episodes
  after the ant reaches the goal are one step long; D4RL's relabeled data keeps 1000-step
  episodes with its `timeouts` only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

import offbench.envs as envs
from offbench.data import maze2d
from offbench.envs.spec import TASKS_DIR
from offbench.envs.waypoint import bearing, flipped, heading_observation, wrap_angle
from offbench.networks import TanhGaussianActor, tanh_gaussian_sample

KINDS = ("play", "diverse")  # `play` first: antmaze-umaze's default kind
BACKEND = "mujoco"
EPISODE_STEPS = 1000  # D4RL's collection episodes (generate_ant_maze_datasets.py)
NUM_ENVS = 64  # at most this many parallel streams
STEPS_PER_ENV = 5000  # at least this many steps per stream
POLICY_DIR = TASKS_DIR / "policies" / "ant-nav"


@dataclasses.dataclass(frozen=True)
class NavController:
    """The waypoint policy and the data's action noise."""

    policy: str = "nav"  # tasks/policies/ant-nav/policies.json entry
    # rad per step (0.05 s) the observed heading may turn towards the waypoint's bearing;
    # None: the bearing itself, as the waypoint task shows it
    heading_rate: float | None = None
    noise: float = 0.2  # D4RL's --noisy
    flip_reset: bool = True  # a flip ends the collection episode (a termination, reward 0)


NAV = NavController()


# -- the controller -------------------------------------------------------------------------------

@cache
def manifest() -> dict:
    return json.loads((POLICY_DIR / "policies.json").read_text())


def load_nav_policy(name: str = NAV.policy) -> tuple[tuple[int, ...], object, str]:
    """(hidden sizes, actor params, sha256) of the committed navigation policy, its file
    checked against its recorded sha256."""
    info = manifest()
    entry = info["policies"][name]
    data = (POLICY_DIR / entry["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"ant-nav/{entry['file']} does not match its sha256 in policies.json "
                         f"(file {digest[:12]}, recorded {entry['sha256'][:12]}); restore it")
    return tuple(info["hidden"]), serialization.msgpack_restore(data), digest


def waypoint(maze: maze2d.Maze, position: jax.Array, goal: jax.Array) -> jax.Array:
    """D4RL's waypoint: the centre of the next cell on a shortest path from the ant's cell, or
    the goal itself when that next cell (or the ant's own) is the goal's."""
    goal_cell = maze.cell(goal)
    nxt = maze.hops[maze.cell(position), goal_cell]
    return jnp.where(nxt == goal_cell, goal, maze.centres[nxt])


def steer(params, hidden, physics, heading: jax.Array, target: jax.Array, key: jax.Array,
          ctrl: NavController = NAV, deterministic: bool = False
          ) -> tuple[jax.Array, jax.Array]:
    """(action without the data's noise, new heading): the heading turns towards `target`
    (at most heading_rate, if set), and the policy runs along it."""
    turn = wrap_angle(bearing(physics, target) - heading)
    if ctrl.heading_rate is not None:
        turn = jnp.clip(turn, -ctrl.heading_rate, ctrl.heading_rate)
    heading = wrap_angle(heading + turn)
    mean, log_std = TanhGaussianActor(hidden, 8).apply(params, heading_observation(physics,
                                                                                   heading))
    action = jnp.tanh(mean) if deterministic else tanh_gaussian_sample(mean, log_std, key)[0]
    return action, heading


def controller(env: envs.MazeEnv, ctrl: NavController = NAV, noise: bool = True,
               policy: tuple | None = None):
    """The controller as (init(state) -> heading, act(heading, state, key) -> (action,
    heading)) for one env of `env` (a bare MazeEnv). policy: (hidden, params) of another actor
    than the committed one (choosing among snapshots)."""
    hidden, params = policy or load_nav_policy(ctrl.policy)[:2]
    maze = maze2d.Maze.of(env)

    def target(state):
        return waypoint(maze, state.pipeline_state.qpos[:2], state.info["goal"])

    def init(state):
        return bearing(state.pipeline_state, target(state))

    def act(heading, state, key):
        k_act, k_noise = jax.random.split(key)
        action, heading = steer(params, hidden, state.pipeline_state, heading, target(state),
                                k_act, ctrl)
        if noise:
            action = jnp.clip(action + ctrl.noise * jax.random.normal(k_noise, action.shape),
                              -1.0, 1.0)
        return action, heading

    return init, act


# -- the dataset streams --------------------------------------------------------------------------

def kind_goals(task: str, kind: str) -> str:
    """The env's `goals` option a kind's collection episodes reset with."""
    if kind == "diverse":
        return "any"
    if kind == "play":
        return "diverse" if envs.get_spec(task).diverse_map is not None else "eval"
    raise ValueError(f"unknown dataset kind '{kind}' for task '{task}'; valid: {KINDS}")


def stream_shape(size: int) -> tuple[int, int]:
    num_envs = max(1, min(NUM_ENVS, size // STEPS_PER_ENV))
    return num_envs, math.ceil(size / num_envs)


def stream(task: str, kind: str, size: int, key: jax.Array, ctrl: NavController = NAV
           ) -> dict[str, np.ndarray]:
    """Per-env streams [num_envs, steps, ...]: observations (with the collection goal),
    actions, rewards (0: relabeled later), next_observations, terminals (a flip), timeouts
    (1000 steps without a flip), positions (x, y after each step)."""
    env = envs.make(task, BACKEND, wrap=False, goals=kind_goals(task, kind), continuing=True)
    init, act = controller(env, ctrl)
    num_envs, steps = stream_shape(size)

    def one(key):
        k_reset, k_run = jax.random.split(key)
        state = env.reset(k_reset)

        def body(carry, t):
            state, heading, elapsed = carry
            k_act, k_reset = jax.random.split(jax.random.fold_in(k_run, t))
            action, heading = act(heading, state, k_act)
            nxt = env.step(state, action)
            elapsed = elapsed + 1
            fell = flipped(nxt.pipeline_state) & ctrl.flip_reset
            end = (elapsed >= EPISODE_STEPS) | fell
            out = {"observations": state.obs, "actions": action,
                   "next_observations": nxt.obs, "terminals": fell.astype(jnp.float32),
                   "timeouts": (end & ~fell).astype(jnp.float32),
                   "positions": nxt.pipeline_state.qpos[:2]}
            fresh = env.reset(k_reset)
            state = jax.tree.map(lambda a, b: jnp.where(end, a, b), fresh, nxt)
            heading = jnp.where(end, init(fresh), heading)
            return (state, heading, jnp.where(end, 0, elapsed)), out

        carry = (state, init(state), jnp.zeros((), jnp.int32))
        return jax.lax.scan(body, carry, jnp.arange(steps))[1]

    out = jax.device_get(jax.jit(jax.vmap(one))(jax.random.split(key, num_envs)))
    out = {k: np.asarray(v) for k, v in out.items()}
    return {**out, "rewards": np.zeros(out["timeouts"].shape, np.float32)}


def relabel(task: str, kind: str, data: dict[str, np.ndarray], seed: int
            ) -> dict[str, np.ndarray]:
    """Streams with each collection episode cut into episodes towards draws of the
    evaluation goal (module docstring); the goal slots are the observations' last two."""
    centre, noise = maze2d.eval_goal(task)
    radius = np.float32(envs.get_spec(task).goal_radius)
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
    obs, nxt = np.array(data["observations"]), np.array(data["next_observations"])
    rewards = np.zeros(obs.shape[:2], np.float32)
    terminals, timeouts = rewards.copy(), rewards.copy()
    for e in range(obs.shape[0]):
        position = data["positions"][e]
        collection_end = (data["timeouts"][e] > 0) | (data["terminals"][e] > 0)
        ends = np.r_[np.flatnonzero(collection_end), len(position) - 1]
        t = 0
        for stop in ends:
            while t <= stop:
                goal, hit = maze2d.draw_goal_and_hit(rng, centre, noise, position[t:stop + 1],
                                                     radius)
                end = stop if hit is None else t + hit
                if hit is not None:
                    rewards[e, end] = terminals[e, end] = 1.0
                else:  # the collection episode's end: a flip (terminal) or 1000 steps
                    terminals[e, end] = data["terminals"][e, stop]
                    timeouts[e, end] = data["timeouts"][e, stop]
                obs[e, t:end + 1, -2:] = goal
                nxt[e, t:end + 1, -2:] = goal
                t = end + 1
    return {"observations": obs, "actions": data["actions"], "rewards": rewards,
            "next_observations": nxt, "terminals": terminals, "timeouts": timeouts}


def dataset_key(seed: int, kind: str) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(f"antmaze-{kind}".encode()))


def generate(task: str, kind: str, size: int, seed: int) -> dict[str, np.ndarray]:
    """The relabeled streams of one dataset ([num_envs, steps, ...] host arrays)."""
    return relabel(task, kind, stream(task, kind, size, dataset_key(seed, kind)), seed)


def policy_hashes() -> dict[str, str]:
    return {f"ant-nav/{NAV.policy}": manifest()["policies"][NAV.policy]["sha256"]}


def record(kind: str) -> dict:
    """What a dataset's build record says about its behaviour (compared on rebuilds)."""
    return {"controller": "offbench.data.antmaze (SAC trained on the waypoint task ant-waypoint, "
                          "along D4RL's waypoints, tasks/policies/ant-nav)",
            **dataclasses.asdict(NAV), "episode_steps": EPISODE_STEPS, "kind": kind,
            "flip": "a termination with reward 0, then a reset",
            "goals": "relabeled to per-episode draws of the evaluation goal (antmaze.py)"}


def collection_success(rewards: np.ndarray, terminals: np.ndarray, lengths: np.ndarray
                       ) -> dict:
    """From a built dataset's rewards, terminals and episode lengths: its collection episodes
    (runs of episodes up to one that does not end in a success), the fraction of them in
    which the ant reached the evaluation goal at least once, and the fraction that ended in a
    flip (a termination without reward)."""
    ends = np.cumsum(lengths) - 1
    success = np.asarray(rewards)[ends] > 0
    fell = (np.asarray(terminals)[ends] > 0) & ~success
    reached, flips, total, run = 0, 0, 0, False
    for ok, flip in zip(success, fell, strict=True):
        run = run or ok
        if not ok:
            total, reached, flips, run = total + 1, reached + run, flips + flip, False
    return {"collection_episodes": total, "reached_eval_goal": reached / max(total, 1),
            "flipped": flips / max(total, 1)}


# -- measuring the controller ---------------------------------------------------------------------

def success_rate(task: str, episodes: int, key: jax.Array, goals: str = "eval",
                 noise: bool = False, ctrl: NavController = NAV, policy: tuple | None = None
                 ) -> tuple[float, float]:
    """(fraction of `episodes` episodes of the task on the C backend, within its time limit,
    that reach the goal; fraction that flipped over before reaching it)."""
    env = envs.make(task, BACKEND, auto_reset=False, goals=goals)
    init, act = controller(env.unwrapped, ctrl, noise, policy)

    @jax.jit
    def run(key):
        k_reset, k_run = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        heading = jax.vmap(init)(state)

        def body(carry, t):
            state, heading, reached, fell = carry
            keys = jax.random.split(jax.random.fold_in(k_run, t), episodes)
            action, heading = jax.vmap(act)(heading, state, keys)
            state = jax.vmap(env.step)(state, action)
            reached = jnp.maximum(reached, state.metrics["success"])
            fell = jnp.maximum(fell, jax.vmap(flipped)(state.pipeline_state) * (1 - reached))
            return (state, heading, reached, fell), None

        zero = jnp.zeros(episodes)
        carry = (state, heading, zero, zero)
        (_, _, reached, fell), _ = jax.lax.scan(body, carry, jnp.arange(env.episode_length))
        return reached.mean(), fell.mean()

    reached, fell = run(key)
    return float(reached), float(fell)


def open_ground(episodes: int, key: jax.Array, distance: float = 4.0, steps: int = 100,
                radius: float = 0.45, ctrl: NavController = NAV) -> tuple[float, float, float]:
    """Waypoint reaching on open ground (the `ant` task's floor, C backend, no action noise):
    from a reset, a target `distance` m away in one of `episodes` evenly spaced directions;
    (fraction that come within `radius` of it within `steps` steps, mean steps to get there
    among those, fraction flipped over)."""
    hidden, params, _ = load_nav_policy(ctrl.policy)
    env = envs.make("ant", BACKEND, wrap=False)
    angles = jnp.linspace(-jnp.pi, jnp.pi, episodes, endpoint=False)
    direction = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)

    @jax.jit
    def run(key):
        k_reset, k_run = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        target = state.pipeline_state.qpos[:, :2] + distance * direction
        heading = jax.vmap(bearing)(state.pipeline_state, target)

        def body(carry, t):
            state, heading, first, fell = carry
            keys = jax.random.split(jax.random.fold_in(k_run, t), episodes)
            action, heading = jax.vmap(
                lambda p, h, g, k: steer(params, hidden, p, h, g, k, ctrl))(
                state.pipeline_state, heading, target, keys)
            state = jax.vmap(env.step)(state, action)
            near = jnp.linalg.norm(state.pipeline_state.qpos[:, :2] - target, axis=-1) <= radius
            first = jnp.where(near & (first > steps), t + 1, first)
            fell = fell | jax.vmap(flipped)(state.pipeline_state)
            return (state, heading, first, fell), None

        carry = (state, heading, jnp.full(episodes, steps + 1), jnp.zeros(episodes, bool))
        (_, _, first, fell), _ = jax.lax.scan(body, carry, jnp.arange(steps))
        hit = first <= steps
        return jnp.mean(hit), jnp.sum(jnp.where(hit, first, 0)) / jnp.maximum(1, jnp.sum(hit)), \
            jnp.mean(fell)

    reached, time, fell = run(key)
    return float(reached), float(time), float(fell)


# -- the record of tasks/policies/ant-nav ---------------------------------------------------------

MEASURE_EPISODES = 64
MAZES = ("antmaze-umaze", "antmaze-medium", "antmaze-large")  # measured, and select's criterion
SELECT_TASKS = MAZES


def measure(command: str, log=print, made: dict | None = None) -> dict:
    """Measure the navigation controller and write tasks/policies/ant-nav/policies.json
    (keeping its policy entries): open-ground waypoint reaching, and success from the tasks'
    evaluation starts to their goals and between random cells, with and without the data's
    action noise. `made`: the provenance record to store (`select` passes the one it took
    before writing the controller); by default, taken now."""
    from offbench.io import write_text_atomic
    from offbench.provenance import record as provenance

    made = made or provenance()
    info = json.loads((POLICY_DIR / "policies.json").read_text())
    key = jax.random.PRNGKey(0)
    reached, steps, fell = open_ground(MEASURE_EPISODES, key)
    results = {"open_ground_waypoint_4m": {
        "episodes": MEASURE_EPISODES, "reached_within_0.45m_in_100_steps": reached,
        "mean_steps_to_reach": steps, "flipped": fell}}
    log(f"open ground: {results}")
    for task in MAZES:
        for goals in ("eval", "any"):
            for noise in (False, True):
                success, fell = success_rate(task, MEASURE_EPISODES, key, goals, noise)
                name = f"{task} goals={goals} {'noise 0.2' if noise else 'no noise'}"
                results[name] = {"episodes": MEASURE_EPISODES, "success": success,
                                 "flipped_before_success": fell}
                log(f"{name}: success {success:.3f}, flipped before success {fell:.3f}")
    info["measured"] = {"command": command, "controller": dataclasses.asdict(NAV),
                        "results": results, **made}
    write_text_atomic(POLICY_DIR / "policies.json", json.dumps(info, indent=2, default=str))
    manifest.cache_clear()
    return info


SELECT_EPISODES = 32  # per task and candidate
SELECT_CANDIDATES = 6  # the last snapshot and those every SELECT_SPACING periods before it
SELECT_SPACING = 5


def select(run: Path, seed: int = 0, command: str | None = None, log=print) -> dict:
    """Choose the navigation controller from a SAC run on the waypoint task (`make policies`,
    task `ant-waypoint`) and commit it: among the last snapshot and those every
    SELECT_SPACING evaluation periods before it, the one with the highest mean success over
    SELECT_TASKS from their evaluation starts, with the data's action noise, becomes
    tasks/policies/ant-nav/nav.msgpack; policies.json records the candidates, the training run
    and the command, then `measure` adds the controller's measurements."""
    from offbench.io import write_bytes_atomic, write_text_atomic
    from offbench.policies import snapshot_path, training_record
    from offbench.provenance import record as provenance

    made = provenance()  # before anything is written, so the commit is not marked dirty by it
    run = Path(run)
    folder = snapshot_path(run, 0, seed).parent
    files = sorted(folder.glob("period_*.msgpack"))
    if not files:
        raise FileNotFoundError(f"no policy snapshots in {folder}; train with "
                                "`offbench train-online sac ant-waypoint --snapshots` first")
    run_json = json.loads((run / "run.json").read_text())
    settings = {k: run_json[k] for k in ("algorithm", "task", "online_config", "algo_config")}
    if settings["task"] != "ant-waypoint":
        raise ValueError(f"{run} trained on '{settings['task']}'; the navigation controller "
                         "comes from the waypoint task `ant-waypoint`")
    hidden = tuple(settings["algo_config"]["hidden"])
    every = settings["online_config"]["eval_every"]
    last = int(files[-1].stem.split("_")[1])
    periods = [p for p in range(last, -1, -SELECT_SPACING)][:SELECT_CANDIDATES]
    metrics = _training_returns(run, seed)
    candidates, key = {}, jax.random.PRNGKey(0)
    for period in periods:
        params = serialization.msgpack_restore(snapshot_path(run, period, seed).read_bytes())
        rates = {t: success_rate(t, SELECT_EPISODES, key, noise=True, policy=(hidden, params))
                 for t in SELECT_TASKS}
        candidates[period] = {"env_steps": (period + 1) * every,
                              "training_eval_return": metrics.get(period),
                              "success": {t: r[0] for t, r in rates.items()},
                              "flipped_before_success": {t: r[1] for t, r in rates.items()},
                              "mean_success": float(np.mean([r[0] for r in rates.values()]))}
        log(f"[ant-nav] period {period} ({candidates[period]['env_steps']} env steps): mean "
            f"success {candidates[period]['mean_success']:.3f} "
            f"({', '.join(f'{t} {r[0]:.2f}' for t, r in rates.items())})")
    best = max(periods, key=lambda p: (candidates[p]["mean_success"], p))
    data = snapshot_path(run, best, seed).read_bytes()
    write_bytes_atomic(POLICY_DIR / "nav.msgpack", data)
    info = {
        "task": "ant-waypoint (offbench/envs/waypoint.py)", "hidden": list(hidden),
        "algorithm": settings["algorithm"],
        "made_by": ("offbench's SAC trained on the waypoint task ant-waypoint (C backend); "
                    "offbench.data.antmaze.select chose the snapshot with the highest mean "
                    f"success over {', '.join(SELECT_TASKS)} ({SELECT_EPISODES} episodes each "
                    "from the evaluation start, the data's action noise) among the candidates "
                    "below"),
        "policies": {"nav": {"file": "nav.msgpack",
                             "sha256": hashlib.sha256(data).hexdigest(), "period": best,
                             **candidates[best]}},
        "candidates": {str(p): c for p, c in candidates.items()},
        "training_run": training_record(settings, (last + 1) * every, run_json,
                                        POLICY_DIR / "policies.json"),
        "selected_by": {**made, "command": command or "offbench policies select "
                        f"ant-waypoint --runs {run.parent}"},
    }
    write_text_atomic(POLICY_DIR / "policies.json", json.dumps(info, indent=2, default=str))
    manifest.cache_clear()
    return measure(info["selected_by"]["command"], log, made)


def _training_returns(run: Path, seed: int) -> dict[int, float]:
    import pandas as pd

    path = run / "metrics.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path)
    df = df[df.seed == seed] if "seed" in df else df
    return {int(p): float(r) for p, r in zip(df.period, df.eval_return, strict=True)}


if __name__ == "__main__":
    measure("python -m offbench.data.antmaze")
