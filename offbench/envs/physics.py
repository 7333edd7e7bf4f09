"""Physics backends behind one pure-JAX interface.

Both backends advance a `PhysicsState` by `frame_skip` MuJoCo steps and return the quantities the
task functions read (observation, reward, termination are written once, in JAX, in
`locomotion.py`):

* `mjx`: MuJoCo XLA, pure JAX; the default on GPU/TPU.
* `mujoco`: the MuJoCo C engine, stepped on host threads and reached from inside `jit` through
  `jax.pure_callback` (vmap_method="expand_dims"), so it composes with `vmap` and `lax.scan` and a
  whole batch of environments costs one callback. The default on CPU, where MJX is 10-40x slower.

We step the C engine with our own small thread pool instead of `mujoco.rollout`: rollout does
not return the contact forces (`cfrc_ext`) that Ant's observation needs, and a per-environment
`mj_step(nstep=frame_skip)` loop (MuJoCo releases the GIL) measured as fast as rollout at batch
16-256 on our 2-core machines (see results/perf/envs.md).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

BACKENDS = ("mujoco", "mjx")
DYNAMICS_OVERRIDES = ("gravity", "friction", "mass", "gear")


@struct.dataclass
class PhysicsState:
    """The part of the MuJoCo state an environment carries between steps (float32).

    `xpos_main` and `cfrc_ext` are what MuJoCo's `mjData` holds after the last `mj_step`
    (kinematics of the last integrator stage, like Gymnasium reads them); `cfrc_ext` is empty
    for tasks that do not use contact forces.
    """

    qpos: jax.Array
    qvel: jax.Array
    qacc_warmstart: jax.Array
    xpos_main: jax.Array
    cfrc_ext: jax.Array


def default_backend() -> str:
    """`mujoco` (C engine) on CPU, `mjx` on GPU/TPU."""
    return "mujoco" if jax.default_backend() == "cpu" else "mjx"


def _positive_scale(key: str, value: object) -> float:
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"override {key}={value!r} must be a number (a scale factor)") from None
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"override {key}={value!r} must be a finite, non-negative scale factor")
    return scale


def _named_scales(model: mujoco.MjModel, key: str, value: object, obj: mujoco.mjtObj,
                  count: int) -> np.ndarray:
    """A scale per body/actuator from a float (all of them) or a {name: scale} mapping."""
    if not isinstance(value, Mapping):
        return np.full(count, _positive_scale(key, value))
    scales = np.ones(count)
    names = [mujoco.mj_id2name(model, obj, i) for i in range(count)]
    for name, v in value.items():
        if name not in names:
            valid = [n for n in names if n]
            raise ValueError(f"override {key}: unknown name '{name}'; valid names: {valid}")
        scales[names.index(name)] = _positive_scale(f"{key}.{name}", v)
    return scales


def apply_dynamics_overrides(model: mujoco.MjModel, overrides: Mapping[str, object]) -> None:
    """Scale physical parameters in place, for dynamics-gap (sim vs real) variants.

    gravity:  scale of the gravity vector.
    friction: scale of every geom's friction coefficients (sliding, torsional, rolling).
    mass:     scale of body masses and inertias (a uniform density change); a float for all
              bodies or {body_name: scale}.
    gear:     scale of actuator gears (motor strength); a float or {actuator_name: scale}.
    """
    unknown = sorted(set(overrides) - set(DYNAMICS_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid overrides: {list(DYNAMICS_OVERRIDES)}")
    if "gravity" in overrides:
        model.opt.gravity[:] *= _positive_scale("gravity", overrides["gravity"])
    if "friction" in overrides:
        model.geom_friction[:] *= _positive_scale("friction", overrides["friction"])
    if "mass" in overrides:
        scales = _named_scales(model, "mass", overrides["mass"], mujoco.mjtObj.mjOBJ_BODY,
                               model.nbody)
        model.body_mass[:] *= scales
        model.body_inertia[:] *= scales[:, None]
    if "gear" in overrides:
        scales = _named_scales(model, "gear", overrides["gear"], mujoco.mjtObj.mjOBJ_ACTUATOR,
                               model.nu)
        model.actuator_gear[:, 0] *= scales
    if overrides:
        # Recompute the constants MuJoCo derives from masses at compile time.
        mujoco.mj_setConst(model, mujoco.MjData(model))


class Physics(Protocol):
    name: str
    model: mujoco.MjModel

    def step(self, state: PhysicsState, ctrl: jax.Array) -> PhysicsState: ...


def _import_mjx():
    # mujoco.mjx prints "Failed to import warp" when the optional GPU backend is absent; we only
    # use its JAX implementation, so that line is noise.
    with contextlib.redirect_stdout(io.StringIO()):
        from mujoco import mjx
    _align_plane_capsule_frames_with_c()
    return mjx


def _align_plane_capsule_frames_with_c() -> None:
    """Make MJX's plane-capsule contact frames the ones the C engine builds.

    Both engines align a contact's first tangent with the capsule axis projected on the plane
    (friction cones are pyramids, so the tangent orientation changes the dynamics). MJX 3.17
    falls back to a fixed axis once that projection is shorter than 0.5, i.e. for any capsule
    steeper than 60 degrees, while C keeps the projected axis. Ant's legs touch the floor that
    steeply all the time, and the fallback made one Ant step differ from Gymnasium by up to
    1e-2 in qpos (and flipped contact-force observations). Here the projected axis is kept down
    to a numerically safe length, as in C; tests/test_env_parity.py guards the result.
    """
    from mujoco.mjx._src import collision_driver, collision_primitive
    from mujoco.mjx._src import math as mjx_math
    from mujoco.mjx._src.types import GeomType

    key = (GeomType.PLANE, GeomType.CAPSULE)
    if getattr(collision_driver._COLLISION_FUNC[key], "_offbench", False):
        return

    @collision_primitive.collider(ncon=2)
    def plane_capsule(plane, cap):
        normal, axis = plane.mat[:, 2], cap.mat[:, 2]
        tangent, length = mjx_math.normalize_with_norm(axis - normal * jnp.dot(normal, axis))
        # Capsule (nearly) perpendicular to the plane: any tangent will do.
        fallback = jnp.where(jnp.abs(normal[1]) < 0.5, jnp.array([0.0, 1.0, 0.0]),
                             jnp.array([0.0, 0.0, 1.0]))
        tangent = jnp.where(length < 1e-6, fallback, tangent)
        frame = jnp.stack([normal, tangent, jnp.cross(normal, tangent)])
        half = axis * cap.size[1]
        dists, points = [], []
        for end in (cap.pos + half, cap.pos - half):
            dist = jnp.dot(end - plane.pos, normal) - cap.size[0]
            dists.append(dist)
            points.append(end - normal * (cap.size[0] + 0.5 * dist))
        return jnp.stack(dists), jnp.stack(points), jnp.stack([frame, frame])

    plane_capsule._offbench = True
    collision_driver._COLLISION_FUNC[key] = plane_capsule


class MjxPhysics:
    """MuJoCo XLA: `frame_skip` calls of `mjx.step` inside a `lax.scan`."""

    name = "mjx"

    def __init__(self, model: mujoco.MjModel, frame_skip: int, main_body: int,
                 contact_forces: bool):
        self._mjx = mjx = _import_mjx()
        self.model = model
        self.frame_skip = frame_skip
        self.main_body = main_body
        self.contact_forces = contact_forces
        self.mjx_model = mjx.put_model(model, impl="jax")
        self._template = mjx.make_data(self.mjx_model, impl="jax")

    def step(self, state: PhysicsState, ctrl: jax.Array) -> PhysicsState:
        mjx, m = self._mjx, self.mjx_model
        data = self._template.replace(qpos=state.qpos, qvel=state.qvel,
                                      qacc_warmstart=state.qacc_warmstart, ctrl=ctrl)
        data, _ = jax.lax.scan(lambda d, _: (mjx.step(m, d), None), data, None,
                               length=self.frame_skip)
        cfrc = jnp.zeros((0,), jnp.float32)
        if self.contact_forces:
            cfrc = mjx.rne_postconstraint(m, data)._impl.cfrc_ext.reshape(-1)
        return PhysicsState(qpos=data.qpos, qvel=data.qvel, qacc_warmstart=data.qacc_warmstart,
                            xpos_main=data.xpos[self.main_body], cfrc_ext=cfrc)


def _num_threads() -> int:
    return max(1, int(os.environ.get("OFFBENCH_MUJOCO_THREADS", os.cpu_count() or 1)))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_num_threads(), thread_name_prefix="offbench-mujoco")
        return _POOL


class MujocoPhysics:
    """The MuJoCo C engine on host threads, called from JAX with one callback per batch.

    The callback is pure: every call sets qpos, qvel, qacc_warmstart and ctrl of a scratch
    `MjData` before stepping, so results depend only on the inputs (checkpoint/resume and vmap
    give the same numbers as an uninterrupted, unbatched run).
    """

    name = "mujoco"

    def __init__(self, model: mujoco.MjModel, frame_skip: int, main_body: int,
                 contact_forces: bool):
        self.model = model
        self.frame_skip = frame_skip
        self.main_body = main_body
        self.contact_forces = contact_forces
        self._scratch: queue.SimpleQueue[mujoco.MjData] = queue.SimpleQueue()
        self._ncfrc = model.nbody * 6 if contact_forces else 0

    def _checkout(self) -> mujoco.MjData:
        try:
            return self._scratch.get_nowait()
        except queue.Empty:
            return mujoco.MjData(self.model)

    def _step_range(self, lo: int, hi: int, inputs: tuple[np.ndarray, ...],
                    outputs: tuple[np.ndarray, ...]) -> None:
        qpos, qvel, warm, ctrl = inputs
        out_qpos, out_qvel, out_warm, out_xpos, out_cfrc = outputs
        m, data = self.model, self._checkout()
        try:
            for i in range(lo, hi):
                data.qpos[:] = qpos[i]
                data.qvel[:] = qvel[i]
                data.qacc_warmstart[:] = warm[i]
                data.ctrl[:] = ctrl[i]
                mujoco.mj_step(m, data, nstep=self.frame_skip)
                out_qpos[i] = data.qpos
                out_qvel[i] = data.qvel
                out_warm[i] = data.qacc_warmstart
                out_xpos[i] = data.xpos[self.main_body]
                if self._ncfrc:
                    mujoco.mj_rnePostConstraint(m, data)
                    out_cfrc[i] = data.cfrc_ext.reshape(-1)
        finally:
            self._scratch.put(data)

    def host_step(self, qpos: np.ndarray, qvel: np.ndarray, warm: np.ndarray,
                  ctrl: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step a batch on the host. Leading axes are batch axes (from vmap expand_dims)."""
        arrays = (qpos, qvel, warm, ctrl)
        batch_shape = np.broadcast_shapes(*(a.shape[:-1] for a in arrays))
        flat = tuple(np.broadcast_to(a, batch_shape + a.shape[-1:]).reshape(-1, a.shape[-1])
                     for a in arrays)
        n = flat[0].shape[0]
        m = self.model
        outputs = tuple(np.empty((n, k), np.float32)
                        for k in (m.nq, m.nv, m.nv, 3, self._ncfrc))
        nthread = min(_num_threads(), n)
        if nthread <= 1:
            self._step_range(0, n, flat, outputs)
        else:
            bounds = np.linspace(0, n, nthread + 1).astype(int)
            futures = [_thread_pool().submit(self._step_range, lo, hi, flat, outputs)
                       for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            for f in futures:
                f.result()
        return tuple(o.reshape(batch_shape + o.shape[-1:]) for o in outputs)

    def step(self, state: PhysicsState, ctrl: jax.Array) -> PhysicsState:
        m = self.model
        f32 = jnp.float32
        shapes = tuple(jax.ShapeDtypeStruct((k,), f32)
                       for k in (m.nq, m.nv, m.nv, 3, self._ncfrc))
        out = jax.pure_callback(self.host_step, shapes, state.qpos.astype(f32),
                                state.qvel.astype(f32), state.qacc_warmstart.astype(f32),
                                ctrl.astype(f32), vmap_method="expand_dims")
        return PhysicsState(*out)


def make_physics(backend: str, model: mujoco.MjModel, frame_skip: int, main_body: int,
                 contact_forces: bool) -> Physics:
    if backend == "mjx":
        return MjxPhysics(model, frame_skip, main_body, contact_forces)
    if backend == "mujoco":
        return MujocoPhysics(model, frame_skip, main_body, contact_forces)
    raise ValueError(f"unknown backend '{backend}'; valid backends: {list(BACKENDS)}")
