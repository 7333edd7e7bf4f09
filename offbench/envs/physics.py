"""Physics backends behind one pure-JAX interface.

Both backends advance a `PhysicsState` by `frame_skip` MuJoCo steps and return the quantities the
task functions read (observation, reward, termination are written once, in JAX, in
`locomotion.py`):

* `mjx`: MuJoCo XLA, pure JAX; the default on GPU/TPU.
* `mujoco`: the MuJoCo C engine, reached from inside `jit` through an XLA FFI custom call
  written in C++ (`mujoco_ffi.cc`; vmap_method="expand_dims"), so it composes with `vmap` and
  `lax.scan` and a whole batch of environments costs one call, split in chunks over XLA's
  CPU thread pool.
  The default on CPU, where MJX is 10-40x slower. Where the handler cannot be compiled (no C++
  compiler), the same step runs through `jax.pure_callback` on Python threads.

We step the C engine ourselves instead of calling `mujoco.rollout`: rollout does not return the
contact forces (`cfrc_ext`) that Ant's observation needs, nor carry the solver's warm start from
one env step to the next as Gymnasium does; the per-environment `mj_step` loop in C++ keeps
both and measures as fast as rollout (results/perf/envs.md).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from offbench.envs import mujoco_ffi

BACKENDS = ("mujoco", "mjx")
DYNAMICS_OVERRIDES = ("gravity", "friction", "mass", "gear")


@struct.dataclass
class PhysicsState:
    """The part of the MuJoCo state an environment carries between steps (float32).

    `xpos_main` and `cfrc_ext` are what MuJoCo's `mjData` holds after the last `mj_step`
    (kinematics of the last integrator stage, like Gymnasium reads them); `cfrc_ext` (flat,
    nbody * 6) holds zeros for tasks that do not read contact forces.
    """

    qpos: jax.Array
    qvel: jax.Array
    qacc_warmstart: jax.Array
    xpos_main: jax.Array
    cfrc_ext: jax.Array


def default_backend() -> str:
    """`mujoco` (C engine) on CPU, `mjx` on GPU/TPU."""
    return "mujoco" if jax.default_backend() == "cpu" else "mjx"


def resolve_backend(backend: str | None) -> str:
    """The backend asked for, or the device's default (None): the one place that rule lives."""
    return backend or default_backend()


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
        raise ValueError(
            f"unknown override(s) {unknown}; valid overrides: {list(DYNAMICS_OVERRIDES)}")
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
                 contact_forces: bool, track_main_body: bool):
        self._mjx = mjx = _import_mjx()
        self.model = model
        self.track_main_body = track_main_body
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
        cfrc = jnp.zeros(self.model.nbody * 6, jnp.float32)
        if self.contact_forces:
            cfrc = mjx.rne_postconstraint(m, data)._impl.cfrc_ext.reshape(-1)
        xpos = data.xpos[self.main_body] if self.track_main_body else jnp.zeros(3, jnp.float32)
        return PhysicsState(qpos=data.qpos, qvel=data.qvel, qacc_warmstart=data.qacc_warmstart,
                            xpos_main=xpos, cfrc_ext=cfrc)


def _num_threads() -> int:
    return max(1, int(os.environ.get("OFFBENCH_MUJOCO_THREADS", os.cpu_count() or 1)))


_MIN_THREADED_SECONDS = 2e-3
# C++ path: a batch is split over threads only in chunks of at least this many envs (waking a
# thread costs about one env step of the smallest task).
FFI_MIN_ENVS_PER_THREAD = 4
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

    The step is pure: every call sets qpos, qvel, qacc_warmstart and ctrl of a scratch
    `MjData` (one `mj_setState`) before stepping, so results depend only on the inputs
    (checkpoint/resume and vmap give the same numbers as an uninterrupted, unbatched run).
    Inputs and outputs cross the JAX/host boundary packed in one array each.

    The C++ handler (`mujoco_ffi.cc`) runs, per environment, `mj_setState`, `frame_skip` x
    `mj_step`, `mj_getState` and, for tasks that read contact forces (Ant),
    `mj_rnePostConstraint`, as Gymnasium does. The Python fallback does the same, except that
    tasks reading nothing but qpos/qvel (HalfCheetah, Hopper, Walker2d) are stepped by
    `mujoco.rollout` (no per-environment Python cost), which does not carry the solver's warm
    start from one env step to the next: a difference at the solver's tolerance (1e-8).
    """

    name = "mujoco"
    _STATE_IN = (mujoco.mjtState.mjSTATE_QPOS | mujoco.mjtState.mjSTATE_QVEL
                 | mujoco.mjtState.mjSTATE_WARMSTART | mujoco.mjtState.mjSTATE_CTRL)
    _STATE_OUT = (mujoco.mjtState.mjSTATE_QPOS | mujoco.mjtState.mjSTATE_QVEL
                  | mujoco.mjtState.mjSTATE_WARMSTART)

    def __init__(self, model: mujoco.MjModel, frame_skip: int, main_body: int,
                 contact_forces: bool, track_main_body: bool):
        if model.na:
            raise ValueError("models with actuator activations (na > 0) are not supported: "
                             "their state would need `act` too")
        self.model = model
        self.frame_skip = frame_skip
        self.main_body = main_body
        self.contact_forces = contact_forces
        self._scratch: queue.SimpleQueue[mujoco.MjData] = queue.SimpleQueue()
        self._ncfrc = model.nbody * 6  # always carried (zeros unless computed): no empty arrays
        # Packed layouts: in = [qpos, qvel, warmstart, ctrl]; out = [qpos, qvel, warmstart,
        # xpos_main, cfrc_ext] (mj_setState/mj_getState order, then our extras).
        self._sizes_out = (model.nq, model.nv, model.nv, 3, self._ncfrc)
        self._n_in = mujoco.mj_stateSize(model, self._STATE_IN)
        self._n_state_out = mujoco.mj_stateSize(model, self._STATE_OUT)
        self._n_out = sum(self._sizes_out)
        self._seconds_per_env = 0.0  # running estimate of one env's serial step time
        self._calls = 0
        self._nthread = _num_threads()  # read once, not on every step
        self.track_main_body = track_main_body
        full = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._use_rollout = (not contact_forces and not track_main_body
                             and mujoco.mj_stateSize(model, full) == 1 + model.nq + model.nv)
        self._rollouts: dict[int, object] = {}
        self._rollout_lock = threading.Lock()
        self._ffi_model_id = (mujoco_ffi.register_model(model) if mujoco_ffi.load() is not None
                              else None)

    def _checkout(self) -> mujoco.MjData:
        try:
            return self._scratch.get_nowait()
        except queue.Empty:
            return mujoco.MjData(self.model)

    def _step_range(self, lo: int, hi: int, packed_in: np.ndarray, out: np.ndarray) -> None:
        m, data = self.model, self._checkout()
        n_state, main, ncfrc = self._n_state_out, self.main_body, self.contact_forces
        try:
            for i in range(lo, hi):
                mujoco.mj_setState(m, data, packed_in[i], self._STATE_IN)
                mujoco.mj_step(m, data, nstep=self.frame_skip)
                row = out[i]
                mujoco.mj_getState(m, data, row[:n_state], self._STATE_OUT)
                row[n_state:n_state + 3] = data.xpos[main]
                if ncfrc:
                    mujoco.mj_rnePostConstraint(m, data)
                    row[n_state + 3:] = data.cfrc_ext.reshape(-1)
        finally:
            self._scratch.put(data)

    def rollout_inputs(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Packed [qpos, qvel, warmstart, ctrl] rows -> `mujoco.rollout`'s (initial FULLPHYSICS
        state [time, qpos, qvel], per-substep controls, initial warm start)."""
        nq, nv = self.model.nq, self.model.nv
        initial = np.zeros((flat.shape[0], 1 + nq + nv))
        initial[:, 1:] = flat[:, :nq + nv]
        warm = np.ascontiguousarray(flat[:, nq + nv:nq + 2 * nv])
        ctrl = np.repeat(flat[:, None, nq + 2 * nv:], self.frame_skip, axis=1)
        return initial, ctrl, warm

    def _step_rollout(self, flat: np.ndarray, out: np.ndarray, nthread: int) -> None:
        from mujoco import rollout

        m, nqv = self.model, self.model.nq + self.model.nv
        initial, ctrl, warm = self.rollout_inputs(flat)
        with self._rollout_lock:  # one rollout at a time per model (scratch data is shared)
            if nthread not in self._rollouts:
                self._rollouts[nthread] = (rollout.Rollout(nthread=nthread),
                                           [mujoco.MjData(m) for _ in range(max(nthread, 1))])
            runner, datas = self._rollouts[nthread]
            states, _ = runner.rollout(m, datas, initial, ctrl, nstep=self.frame_skip,
                                       initial_warmstart=warm)
        # warm start not carried; xpos/contact forces not needed: they stay zero
        out[:, :nqv] = states[:, -1, 1:]

    def host_step(self, packed_in: np.ndarray) -> np.ndarray:
        """Step a batch on the host. Leading axes are batch axes (from vmap expand_dims)."""
        batch_shape = packed_in.shape[:-1]
        flat = np.asarray(packed_in, np.float64).reshape(-1, self._n_in)
        n = flat.shape[0]
        out = np.zeros((n, self._n_out), np.float64)  # fields a path does not fill stay zero
        nthread = min(self._nthread, n)
        # Handing work to another thread costs ~0.1-0.3 ms on our 2-core VMs, so threads are used
        # only when the batch's serial work (estimated from earlier calls) clearly exceeds that.
        threaded = nthread > 1 and n * self._seconds_per_env >= _MIN_THREADED_SECONDS
        start = time.perf_counter()
        if self._use_rollout:
            self._step_rollout(flat, out, nthread if threaded else 0)
        elif not threaded:
            self._step_range(0, n, flat, out)
        else:
            bounds = np.linspace(0, n, nthread + 1).astype(int)
            futures = [_thread_pool().submit(self._step_range, lo, hi, flat, out)
                       for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            for f in futures:
                f.result()
        serial = (time.perf_counter() - start) / n * (nthread if threaded else 1)
        # Running estimate; the first call (one-off set-up costs) is left out.
        self._calls += 1
        if self._calls == 2:
            self._seconds_per_env = serial
        elif self._calls > 2:
            self._seconds_per_env = 0.9 * self._seconds_per_env + 0.1 * serial
        return out.astype(np.float32).reshape(batch_shape + (self._n_out,))

    @staticmethod
    def pack_inputs(state: PhysicsState, ctrl: jax.Array) -> jax.Array:
        """The step's input rows: [qpos, qvel, qacc_warmstart, ctrl] (float32)."""
        f32 = jnp.float32
        return jnp.concatenate([state.qpos.astype(f32), state.qvel.astype(f32),
                                state.qacc_warmstart.astype(f32), ctrl.astype(f32)], axis=-1)

    def step(self, state: PhysicsState, ctrl: jax.Array) -> PhysicsState:
        f32 = jnp.float32
        packed = self.pack_inputs(state, ctrl)
        if self._ffi_model_id is not None:
            out = mujoco_ffi.step(packed, self._n_out, model_id=self._ffi_model_id,
                                  frame_skip=self.frame_skip, main_body=self.main_body,
                                  contact_forces=self.contact_forces, nthread=self._nthread,
                                  min_chunk=FFI_MIN_ENVS_PER_THREAD)
        else:
            out = jax.pure_callback(self.host_step, jax.ShapeDtypeStruct((self._n_out,), f32),
                                    packed, vmap_method="expand_dims")
        splits = np.cumsum(self._sizes_out)[:-1]
        return PhysicsState(*jnp.split(out, splits, axis=-1))


def make_physics(backend: str, model: mujoco.MjModel, frame_skip: int, main_body: int,
                 contact_forces: bool, track_main_body: bool) -> Physics:
    """A backend that steps `model`; it computes contact forces and the main body's position
    only when the task reads them (`contact_forces`, `track_main_body`)."""
    if backend == "mjx":
        return MjxPhysics(model, frame_skip, main_body, contact_forces, track_main_body)
    if backend == "mujoco":
        return MujocoPhysics(model, frame_skip, main_body, contact_forces, track_main_body)
    raise ValueError(f"unknown backend '{backend}'; valid backends: {list(BACKENDS)}")
