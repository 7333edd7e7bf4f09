"""Navigation tasks: Gymnasium-Robotics' PointMaze (v3) and AntMaze (v5) as brax `Env`s.

A maze task is an agent (a point mass or Gymnasium's Ant) in a grid of wall blocks, with a goal
position. The maze maps, cell size, wall height, noise and goal radius are data
(tasks/maze.toml); the agent models are Gymnasium-Robotics' (the point mass, written out below
from its parameters) and Gymnasium's own `ant.xml` with the maze's walls added, as
Gymnasium-Robotics builds them. Observation, reward, success and termination are JAX functions of
the physics state and the goal, shared by both physics backends; Gymnasium-Robotics' own
environments are the oracle of tests/test_maze_parity.py, on both backends (MJX with its
sphere-box and capsule-box contacts made as the C engine makes them, below).

Semantics (those of `gymnasium_robotics.envs.maze`):
* Cell (i, j) (row i from the top, column j) has its centre at
  x = (j + 0.5) * s - width * s / 2,  y = height * s / 2 - (i + 0.5) * s  (s: cell size).
* Reset: a goal cell is drawn uniformly, the goal is its centre plus U(-n, n) * s noise on x and
  y; a reset cell is drawn uniformly among the reset cells whose centre is farther than 0.5 * s
  from that goal (Gymnasium-Robotics redraws until it is: the same distribution), and the agent
  starts at its centre plus the same kind of noise, at rest (the agent's other coordinates at
  their model defaults).
* Observation (float32, flat): the agent's state (Gymnasium-Robotics' `observation`) followed by
  the goal (`desired_goal`, x and y). PointMaze: [x, y, vx, vy, goal_x, goal_y] (6).
  AntMaze: [qpos[2:] (13), qvel (14), clipped contact forces of bodies 1.. (78), goal (2)] (107):
  Ant-v5's observation without the x, y position, which is `achieved_goal`.
* Reward: sparse, 1.0 when the agent's x, y lies within `goal_radius` (0.45) of the goal, else 0.
  `metrics["success"]` (the step's transition) and `info["success"]` (the current state) hold
  the same test.
* Termination (`continuing=False`, the default here, as D4RL's AntMaze evaluation): the episode
  ends at the first success, so an episode's return is 1 if it reached the goal and 0 if not,
  and the normalized score with ref_min 0, ref_max 1 is 100 x success rate.
  `continuing=True` is Gymnasium-Robotics' default: no termination, reward at every step spent
  at the goal; with `reset_target=True` the goal is redrawn (farther than goal_radius from the
  agent) whenever it is reached.
* Goals (`goals=`): "eval" (default) is the task's fixed evaluation map (D4RL: maze2d's goal
  cell with random starts for PointMaze, AntMaze's start and goal cells for AntMaze); "diverse"
  is Gymnasium-Robotics' `_Diverse_G` map (one start cell, several goal cells) where the maze
  has one; "any" is the plain maze (every open cell a start or goal: Gymnasium-Robotics'
  registered `PointMaze_*-v3` / `AntMaze_*-v5` environments, and the datasets' maze).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import State

from offbench.envs.locomotion import GYMNASIUM_ASSETS, MujocoEnv, _compiler_warnings_once
from offbench.envs.maze_spec import BOTH, GOAL, OPEN, RESET, WALL, MazeSpec
from offbench.envs.physics import PhysicsState, apply_dynamics_overrides, make_physics

# -- geometry ---------------------------------------------------------------------------------

def cell_xy(grid: tuple[str, ...], scaling: float, cell: tuple[int, int]) -> np.ndarray:
    """Centre (x, y) of cell (row, column) in the simulation's coordinates."""
    i, j = cell
    height, width = len(grid), len(grid[0])
    return np.array([(j + 0.5) * scaling - width * scaling / 2,
                     height * scaling / 2 - (i + 0.5) * scaling])


def xy_cell(grid: tuple[str, ...], scaling: float, xy: np.ndarray) -> tuple[int, int]:
    """The cell (row, column) holding position xy."""
    height, width = len(grid), len(grid[0])
    i = int(np.floor((height * scaling / 2 - xy[1]) / scaling))
    j = int(np.floor((xy[0] + width * scaling / 2) / scaling))
    return i, j


def goal_and_reset_cells(grid: tuple[str, ...]) -> tuple[list, list]:
    """(goal cells, reset cells) as Gymnasium-Robotics reads a map: 'g' goal, 'r' reset,
    'c' both; with none of them every open cell is both; with goals but no resets every plain
    open cell is a reset cell (and the other way round)."""
    cells = {k: [] for k in (OPEN, GOAL, RESET, BOTH)}
    for i, row in enumerate(grid):
        for j, c in enumerate(row):
            if c != WALL:
                cells[c].append((i, j))
    goals, resets, both = cells[GOAL], cells[RESET], cells[BOTH]
    if not goals and not resets and not both:
        both = cells[OPEN]
    elif not resets and not both:
        resets = cells[OPEN]
    elif not goals and not both:
        goals = cells[OPEN]
    return goals + both, resets + both


# -- models -------------------------------------------------------------------------------------

# Gymnasium-Robotics' point mass (from D4RL's maze2d): a sphere of radius 0.1 (density 1000) on
# two damped slide joints, force actuated (gear 100, controls in [-1, 1]), no gravity, Euler
# integration at 0.01 s, frictionless (condim 1) contacts with the walls.
POINT_MJCF = """<mujoco>
  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2"
          conaffinity="1"/>
  </default>
  <worldbody>
    <geom name="ground" type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="1"
          conaffinity="0"/>
    <body name="particle" pos="0 0 0">
      <geom name="particle_geom" type="sphere" size="0.1" contype="1"/>
      <site name="particle_site" size="0.2"/>
      <joint name="ball_x" type="slide" axis="1 0 0"/>
      <joint name="ball_y" type="slide" axis="0 1 0"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="motor_x" joint="ball_x" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
    <motor name="motor_y" joint="ball_y" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>"""


@dataclasses.dataclass(frozen=True)
class Agent:
    """How an agent is stepped and observed (Gymnasium-Robotics' PointEnv / Ant-v5 inside
    AntMaze: frame skip, action and velocity clipping, which state the observation holds)."""

    frame_skip: int
    clip_action: float | None  # PointEnv clips actions to [-1, 1] itself
    clip_qvel: float | None  # PointEnv clips velocities before each step (the ball is unbounded)
    exclude_qpos: int  # leading qpos left out of `observation` (AntMaze: x, y)
    contact_forces_in_obs: bool
    contact_force_range: tuple[float, float] = (-1.0, 1.0)

    def xml(self, name: str) -> ET.ElementTree:
        if name == "point":
            return ET.ElementTree(ET.fromstring(POINT_MJCF))
        return ET.parse(GYMNASIUM_ASSETS / "ant.xml")  # Gymnasium's own Ant, as AntMaze loads


AGENTS = {
    "point": Agent(frame_skip=1, clip_action=1.0, clip_qvel=5.0, exclude_qpos=0,
                   contact_forces_in_obs=False),
    "ant": Agent(frame_skip=5, clip_action=None, clip_qvel=None, exclude_qpos=2,
                 contact_forces_in_obs=True),
}


def maze_xml(spec: MazeSpec) -> str:
    """The task's MJCF: the agent's model plus one box per wall cell and the goal marker."""
    s, h, grid = spec.maze_size_scaling, spec.maze_height, spec.maze_map
    tree = AGENTS[spec.agent].xml(spec.agent)
    world = tree.getroot().find("worldbody")
    for i, row in enumerate(grid):
        for j, c in enumerate(row):
            if c == WALL:
                x, y = cell_xy(grid, s, (i, j))
                ET.SubElement(world, "geom", name=f"block_{i}_{j}", type="box",
                              pos=f"{x} {y} {h / 2 * s}", size=f"{0.5 * s} {0.5 * s} {h / 2 * s}",
                              contype="1", conaffinity="1", rgba="0.7 0.5 0.3 1.0")
    ET.SubElement(world, "site", name="target", type="sphere", pos=f"0 0 {h / 2 * s}",
                  size=f"{0.2 * s}", rgba="1 0 0 0.7")  # visual only
    return ET.tostring(tree.getroot(), encoding="unicode")


def load_model(spec: MazeSpec, overrides: Mapping[str, object] | None = None) -> mujoco.MjModel:
    xml = maze_xml(spec)
    with _compiler_warnings_once():
        model = mujoco.MjModel.from_xml_string(xml)
    apply_dynamics_overrides(model, overrides or {})
    return model


_MINVAL = 1e-15  # mjMINVAL


def _sphere_box_local(centre, radius, half):
    """The C engine's sphere-box contact (mjraw_SphereBox) in the box's frame: signed distance,
    position and normal (from the sphere into the box), whatever the distance (the driver keeps
    the contact when it is below the margin)."""
    clamped = jnp.clip(centre, -half, half)
    diff = clamped - centre
    gap = jnp.sqrt(jnp.dot(diff, diff))  # not mjx.math.norm: that one zeroes norms below 1e-8
    inside = gap <= _MINVAL
    normal_out = diff / jnp.where(inside, 1.0, gap)
    pos_out = 0.5 * (clamped + centre + normal_out * radius)  # midway between the surfaces
    # centre inside: the nearest face (in the order -x, +x, -y, +y, -z, +z; the first on ties)
    faces = jnp.abs(jnp.stack([-half, half], axis=1).reshape(-1) - jnp.repeat(centre, 2))
    k = jnp.argmin(faces)
    nearest = jax.nn.one_hot(k // 2, 3, dtype=centre.dtype) * jnp.where(k % 2 == 1, -1.0, 1.0)
    pos_in = centre + nearest * (radius - faces[k]) / 2
    dist = jnp.where(inside, -faces[k], gap) - radius
    return dist, jnp.where(inside, pos_in, pos_out), jnp.where(inside, nearest, normal_out)


def _capsule_box_segment(pos, axis, radius, halflength, size, margin):
    """Where the C engine (mjraw_CapsuleBox) puts its capsule-box contact spheres.

    In the box's frame (pos, axis: the capsule's centre and unit axis; size: the box's half
    sizes): the point of the capsule's segment closest to the box (over the two ends against
    the faces, then the 12 edges, in C's order and with its tie rules) and, depending on how
    the segment lies against that face, edge or corner, a second point farther along the
    segment. Returns their segment parameters (-1..1 from end to end) and which exist; each is
    then a sphere of the capsule's radius collided with the box.
    """
    dtype = pos.dtype
    halfaxis = axis * halflength
    axisdir = sum((halfaxis[k] > 0).astype(jnp.int32) << k for k in range(3))
    best = margin + 2 * (radius + halflength + jnp.sum(size))  # squared distances from here on
    bsp = jnp.zeros((), dtype)  # segment parameter of the closest point
    bbp = jnp.zeros((), dtype)  # edge parameter of the closest point (edge case)
    cltype, clface = jnp.int32(-4), jnp.int32(-1)  # -4 none, -3/-1 an end at a face, 0..8 edge
    clcorner, cledge = jnp.int32(0), jnp.int32(0)
    for end in (-1, 1):  # an end of the segment against a face (at most one axis outside)
        point = pos + halfaxis * end
        out = (point < -size) | (point > size)
        diff = jnp.clip(point, -size, size) - point
        d = jnp.dot(diff, diff)
        better = (jnp.sum(out.astype(jnp.int32)) <= 1) & (d < best)
        best = jnp.where(better, d, best)
        bsp = jnp.where(better, jnp.asarray(end, dtype), bsp)
        cltype = jnp.where(better, -2 + end, cltype)
        clface = jnp.where(better, jnp.max(jnp.where(out, jnp.arange(3), -1)), clface)
    mc = halflength * halflength
    for j in range(3):  # the edges along axis j, from their midpoints
        for i in range(8):
            if i & (1 << j):
                continue
            mid = jnp.stack([size[k] * (1.0 if i & (1 << k) else -1.0) for k in range(3)])
            dif = mid.at[j].set(0.0) - pos
            ma, mb = size[j] * size[j], -size[j] * halfaxis[j]
            u, v = -size[j] * dif[j], jnp.dot(halfaxis, dif)
            det = ma * mc - mb * mb
            ok = jnp.abs(det) >= _MINVAL
            x1 = (mc * u - mb * v) / jnp.where(ok, det, 1.0)  # along the edge
            x2 = (ma * v - mb * u) / jnp.where(ok, det, 1.0)  # along the segment
            hi, lo = x1 > 1, x1 < -1
            x2 = jnp.where(hi, (v - mb) / mc, jnp.where(lo, (v + mb) / mc, x2))
            s1 = jnp.where(hi, 2, jnp.where(lo, 0, 1))
            x1 = jnp.clip(x1, -1.0, 1.0)
            hi, lo = x2 > 1, x2 < -1
            x1 = jnp.where(hi, (u - mb) / ma, jnp.where(lo, (u + mb) / ma, x1))
            s2 = jnp.where(hi, 2, jnp.where(lo, 0, 1))
            s1 = jnp.where(hi | lo, jnp.where(x1 > 1, 2, jnp.where(x1 < -1, 0, s1)), s1)
            x1, x2 = jnp.clip(x1, -1.0, 1.0), jnp.clip(x2, -1.0, 1.0)
            diff = (dif - halfaxis * x2).at[j].add(size[j] * x1)
            d = jnp.dot(diff, diff)
            better = ok & (d < best - _MINVAL)
            best = jnp.where(better, d, best)
            bsp, bbp = jnp.where(better, x2, bsp), jnp.where(better, x1, bbp)
            cltype = jnp.where(better, s1 * 3 + s2, cltype)
            clcorner = jnp.where(better, i + (1 << j) * (s1 // 2), clcorner)
            cledge = jnp.where(better, j, cledge)

    def below(e, sp, also=True):
        return jnp.where(also & (e < sp), e, sp)

    span = jnp.abs(halfaxis)
    # closest at a corner of the box: the second point along the edge or the face the
    # segment lies against (none when the segment points at the corner)
    c1 = axisdir ^ clcorner
    corner_ok = (c1 != 0) & (c1 != 7)
    flip = (c1 == 3) | (c1 == 5) | (c1 == 6)
    mul = jnp.where(flip, -1.0, 1.0).astype(dtype)
    c1 = jnp.where(flip, 7 - c1, c1)
    ax = jnp.where(c1 == 1, 0, jnp.where(c1 == 2, 1, 2))
    ax1, ax2 = (ax + 1) % 3, (ax + 2) % 3
    along = below(2 * size[ax] / span[ax], jnp.where(flip, 1 + bsp, 1 - bsp)) * mul
    across = below(2 * size[ax1] / span[ax1], jnp.where(flip, 1 - bsp, 1 + bsp))
    across = below(2 * size[ax2] / span[ax2], across) * -mul
    at_corner = jnp.where(axis[ax] * axis[ax] > 0.5, along, across)
    # closest inside an edge: a second point only when segment and edge cross (X, not T)
    c1 = (axisdir ^ clcorner) & (7 - (1 << cledge))
    edge_ok = (c1 == 1) | (c1 == 2) | (c1 == 4)
    ax = cledge
    ax1, ax2 = (ax + 1) % 3, (ax + 2) % 3
    ax1 = jnp.where(jnp.abs(axis[ax1]) > jnp.abs(axis[ax2]), ax2, ax1)
    ax2 = 3 - ax - ax1
    bit = (c1 >> ax2) & 1
    mul = jnp.where(bit == 1, 1.0, -1.0).astype(dtype)
    sp = below(2 * size[ax2] / span[ax2], jnp.where(bit == 1, 1 - bsp, 1 + bsp))
    e2 = jnp.where(((axisdir >> ax) & 1) == bit, 1 - bbp, 1 + bbp)
    at_edge = below(size[ax] * e2 / span[ax], sp) * mul
    # an end at a face: the farthest point of the segment still over that face
    face_ok = clface != -1
    mul = jnp.where(cltype == -3, 1.0, -1.0).astype(dtype)
    other = pos - halfaxis * mul
    sp = jnp.asarray(2.0, dtype)
    for k in range(3):
        for bound in (size[k], -size[k]):
            e = (bound - other[k]) / halfaxis[k] * mul
            sp = below(e, sp, (k != clface) & (e > 0))
    at_face = sp * mul

    second = jnp.where(cltype >= 0,
                       jnp.where(cltype // 3 != 1, jnp.where(corner_ok, at_corner, -4.0),
                                 jnp.where(edge_ok, at_edge, -4.0)),
                       jnp.where(face_ok, at_face, -4.0)).astype(dtype)
    found = cltype != -4
    return jnp.stack([bsp, bsp + second]), jnp.stack([found, found & (second > -3)])


def _capsule_box(cap_pos, cap_mat, cap_size, box_pos, box_mat, box_size, margin):
    """World-frame capsule-box contacts as the C engine makes them: (dist (2,), pos (2, 3),
    normal (2, 3)); a contact C does not make gets a distance beyond the margin."""
    pos = box_mat.T @ (cap_pos - box_pos)
    axis = box_mat.T @ cap_mat[:, 2]
    t, exists = _capsule_box_segment(pos, axis, cap_size[0], cap_size[1], box_size, margin)
    centres = pos[None] + t[:, None] * (axis * cap_size[1])[None]
    dist, cpos, normal = jax.vmap(_sphere_box_local, in_axes=(0, None, None))(
        centres, cap_size[0], box_size)
    dist = jnp.where(exists, dist, margin + 1.0)
    return dist, cpos @ box_mat.T + box_pos, normal @ box_mat.T


def _mjx_box_contacts_as_in_c() -> None:
    """Make MJX's sphere-box and capsule-box contacts the ones the C engine makes.

    MJX 3.17's colliders for these pairs return "no contact" (distance 1) unless the geoms
    overlap, so contacts at 0 <= distance < margin, which the C engine includes, never act in
    MJX: the point mass keeps ~4 mm off the walls in C (its margin 0.002 plus the wall's), and
    a step along a wall differed by up to 0.2 in velocity; an ant's leg within 2 cm of a wall
    (margins 0.01 + 0.01) is pushed in C and not in MJX (0.8 in a contact-force observation).
    Where the geoms do overlap, MJX's capsule-convex collider builds its contacts by another
    algorithm (face clipping) than C's. Here both pairs follow C's algorithms (mjraw_SphereBox,
    mjraw_CapsuleBox) and report their signed distance; the driver keeps the contacts below the
    margin, as C does. In float64 they reproduce C's contacts to 1e-12 (and an AntMaze step on
    MJX in float64 then reproduces C's to 1e-8, 1e-12 on most steps);
    tests/test_maze_parity.py checks the contacts in float64 and the float32 steps against
    Gymnasium-Robotics.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        from mujoco.mjx._src import collision_convex, collision_driver
        from mujoco.mjx._src import math as mjx_math
        from mujoco.mjx._src.types import GeomType

    sphere_key, capsule_key = (GeomType.SPHERE, GeomType.BOX), (GeomType.CAPSULE, GeomType.BOX)
    if getattr(collision_driver._COLLISION_FUNC[capsule_key], "_offbench", False):
        return

    @collision_convex.collider(ncon=1)
    def sphere_box(sphere, box):
        centre = box.mat.T @ (sphere.pos - box.pos)  # the sphere's centre in the box's frame
        dist, pos, normal = _sphere_box_local(centre, sphere.size[0], box.size)
        return dist, box.mat @ pos + box.pos, mjx_math.make_frame(box.mat @ normal)

    def capsule_box(m, d, key, geom):
        g1, g2 = geom.T  # MJX orders a pair by type: the capsule first, as C
        margin = jnp.asarray(m.geom_margin)[g1] + jnp.asarray(m.geom_margin)[g2]
        dist, pos, normal = jax.vmap(_capsule_box)(
            d.geom_xpos[g1], d.geom_xmat[g1], m.geom_size[g1], d.geom_xpos[g2],
            d.geom_xmat[g2], m.geom_size[g2], margin)
        frame = jax.vmap(jax.vmap(mjx_math.make_frame))(normal)  # C's frame for a normal
        return dist.reshape(-1), pos.reshape(-1, 3), frame.reshape(-1, 3, 3)

    capsule_box.ncon = 2
    for key, fn in ((sphere_key, sphere_box), (capsule_key, capsule_box)):
        fn._offbench = True
        collision_driver._COLLISION_FUNC[key] = fn


# -- the environment ------------------------------------------------------------------------------

class MazeEnv(MujocoEnv):
    """One maze environment instance; `jax.vmap` its `reset`/`step` for batches.

    Like `LocomotionEnv`: no time limit and no auto-reset here (`offbench.envs.make` adds
    them); non-finite actions raise eagerly and are refused inside jit (reward NaN, done 1,
    info["invalid_action"] 1). The goal lives in `info["goal"]`, so auto-reset draws a new one
    with each episode.

    options: goals ("eval", "diverse", "any"), continuing (bool), reset_target (bool); every
    other keyword is a dynamics override (`offbench.envs.physics.apply_dynamics_overrides`).
    """

    def __init__(self, spec: MazeSpec, backend: str, overrides: Mapping[str, object]):
        overrides = dict(overrides)
        self.goals = str(overrides.pop("goals", "eval"))
        self.continuing = bool(overrides.pop("continuing", False))
        self.reset_target = bool(overrides.pop("reset_target", False))
        if self.reset_target and not self.continuing:
            raise ValueError("reset_target=True needs continuing=True (an episodic task ends "
                             "at the goal)")
        self.spec = spec
        self.overrides = overrides
        self.agent = AGENTS[spec.agent]
        self.grid = spec.map_for(self.goals)
        self.model = load_model(spec, overrides)
        if backend == "mjx":
            _mjx_box_contacts_as_in_c()
        self.physics = make_physics(backend, self.model, self.agent.frame_skip, 1,
                                    self.agent.contact_forces_in_obs, track_main_body=False)
        self.dt = float(self.model.opt.timestep * self.agent.frame_skip)
        s = spec.maze_size_scaling
        goals, resets = goal_and_reset_cells(self.grid)
        self.goal_cells = np.array([cell_xy(self.grid, s, c) for c in goals], np.float32)
        self.reset_cells = np.array([cell_xy(self.grid, s, c) for c in resets], np.float32)
        self._init_qpos = jnp.asarray(self.model.qpos0, jnp.float32)
        self._ncfrc = self.model.nbody * 6

    # -- brax Env interface -------------------------------------------------------------------
    @property
    def observation_size(self) -> int:
        m, a = self.model, self.agent
        size = m.nq - a.exclude_qpos + m.nv + ((m.nbody - 1) * 6 if a.contact_forces_in_obs else 0)
        return size + 2

    def reset(self, rng: jax.Array) -> State:
        rng, k_goal = jax.random.split(rng)
        goal, start = self.sample_goal_and_start(rng)
        qpos = self._init_qpos.at[:2].set(start)
        physics = self.initial_physics(qpos, jnp.zeros(self.model.nv, jnp.float32))
        success = self.success(physics, goal)
        zero = jnp.zeros((), jnp.float32)
        metrics = {"success": success, "distance": self.distance(physics, goal)}
        info = {"goal": goal, "success": success, "invalid_action": zero}
        if self.reset_target:  # raw key data for goal redraws (auto-reset replaces it per episode)
            info["goal_key"] = jax.random.bits(k_goal, (2,), jnp.uint32)
        return State(pipeline_state=physics, obs=self.observation(physics, goal), reward=zero,
                     done=zero, metrics=metrics, info=info)

    def step(self, state: State, action: jax.Array) -> State:
        action = self._check_action(action)
        valid = jnp.all(jnp.isfinite(action))
        a = self.agent
        if a.clip_action is not None:
            action = jnp.clip(action, -a.clip_action, a.clip_action)
        before = state.pipeline_state
        if a.clip_qvel is not None:
            before = before.replace(qvel=jnp.clip(before.qvel, -a.clip_qvel, a.clip_qvel))
        after = self.physics.step(before, jnp.where(valid, action, 0.0))
        after = jax.tree.map(lambda new, old: jnp.where(valid, new, old), after,
                             state.pipeline_state)
        goal = state.info["goal"]
        success = self.success(after, goal)
        reward = success  # sparse: 1 within the goal radius
        terminated = jnp.zeros((), jnp.float32) if self.continuing else success
        metrics = {"success": success, "distance": self.distance(after, goal)}
        new_goal, extra = goal, {}
        if self.reset_target:
            key, sub = jax.random.split(jax.random.wrap_key_data(state.info["goal_key"]))
            new_goal = jnp.where(success > 0, self.redraw_goal(sub, after.qpos[:2]), goal)
            extra["goal_key"] = jnp.where(success > 0, jax.random.key_data(key),
                                          state.info["goal_key"])
        return state.replace(
            pipeline_state=after, obs=self.observation(after, new_goal),
            reward=jnp.where(valid, reward, jnp.nan),
            done=jnp.where(valid, terminated, 1.0).astype(jnp.float32),
            metrics={**state.metrics, **metrics},
            info={**state.info, "goal": new_goal, "success": success,
                  "invalid_action": (~valid).astype(jnp.float32), **extra})

    def initial_physics(self, qpos: jax.Array, qvel: jax.Array) -> PhysicsState:
        """The physics state Gymnasium-Robotics has after reset put the agent at (qpos, qvel):
        no solver warm start, no contact forces yet."""
        m = self.model
        return PhysicsState(
            qpos=jnp.asarray(qpos, jnp.float32), qvel=jnp.asarray(qvel, jnp.float32),
            qacc_warmstart=jnp.zeros(m.nv, jnp.float32), xpos_main=jnp.zeros(3, jnp.float32),
            cfrc_ext=jnp.zeros(self._ncfrc, jnp.float32))

    # -- task functions, shared by both backends -----------------------------------------------
    def _noise(self, key: jax.Array) -> jax.Array:
        n, s = self.spec.position_noise_range, self.spec.maze_size_scaling
        return jax.random.uniform(key, (2,), minval=-n, maxval=n) * s

    def sample_goal_and_start(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A noisy goal and a noisy start position, as Gymnasium-Robotics' reset draws them."""
        k_goal, k_goal_noise, k_start, k_start_noise = jax.random.split(rng, 4)
        goal_cells, reset_cells = jnp.asarray(self.goal_cells), jnp.asarray(self.reset_cells)
        goal = goal_cells[jax.random.randint(k_goal, (), 0, len(self.goal_cells))]
        goal = goal + self._noise(k_goal_noise)
        # Uniform over the reset cells farther than reset_separation * s from the goal: the
        # distribution of Gymnasium-Robotics' redraw-until-far-enough loop.
        far = (jnp.linalg.norm(reset_cells - goal, axis=-1)
               > self.spec.reset_separation * self.spec.maze_size_scaling)
        index = jax.random.choice(k_start, len(self.reset_cells), p=far / jnp.sum(far))
        start = reset_cells[index] + self._noise(k_start_noise)
        return goal.astype(jnp.float32), start.astype(jnp.float32)

    def redraw_goal(self, key: jax.Array, position: jax.Array) -> jax.Array:
        """A new noisy goal farther than goal_radius from `position` (Gymnasium-Robotics'
        update_goal, for continuing tasks with reset_target)."""
        goal_cells = jnp.asarray(self.goal_cells)

        def draw(key):
            k_cell, k_noise = jax.random.split(key)
            cell = goal_cells[jax.random.randint(k_cell, (), 0, len(self.goal_cells))]
            return cell + self._noise(k_noise)

        def near(carry):
            return jnp.linalg.norm(position - carry[1]) <= self.spec.goal_radius

        def again(carry):
            key, _ = carry
            key, sub = jax.random.split(key)
            return key, draw(sub)

        key, sub = jax.random.split(key)
        return jax.lax.while_loop(near, again, (key, draw(sub)))[1].astype(jnp.float32)

    def distance(self, physics: PhysicsState, goal: jax.Array) -> jax.Array:
        return jnp.linalg.norm(physics.qpos[:2] - goal).astype(jnp.float32)

    def success(self, physics: PhysicsState, goal: jax.Array) -> jax.Array:
        return (self.distance(physics, goal) <= self.spec.goal_radius).astype(jnp.float32)

    def agent_observation(self, physics: PhysicsState) -> jax.Array:
        """Gymnasium-Robotics' `observation`: the agent's state without the goal."""
        a = self.agent
        parts = [physics.qpos[a.exclude_qpos:], physics.qvel]
        if a.contact_forces_in_obs:
            lo, hi = a.contact_force_range
            parts.append(jnp.clip(physics.cfrc_ext.reshape(-1, 6)[1:], lo, hi).reshape(-1))
        return jnp.concatenate(parts).astype(jnp.float32)

    def observation(self, physics: PhysicsState, goal: jax.Array) -> jax.Array:
        return jnp.concatenate([self.agent_observation(physics), goal]).astype(jnp.float32)
