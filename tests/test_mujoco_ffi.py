"""The C backend's C++ step (XLA FFI) against its Python-callback fallback and the raw engine."""

import jax
import mujoco
import numpy as np
import pytest

import offbench.envs as envs
from offbench.envs import mujoco_ffi

pytestmark = pytest.mark.skipif(
    mujoco_ffi.load() is None,
    reason=f"the C++ MuJoCo step could not be built here ({mujoco_ffi._FAILED}); the C backend "
           "runs on its jax.pure_callback fallback, which the other tests cover")


def _random_batch(env, batch: int, seed: int):
    keys = jax.random.split(jax.random.key(seed), batch)
    state = jax.jit(jax.vmap(env.reset))(keys)
    actions = jax.random.uniform(jax.random.key(seed + 1), (batch, env.action_size),
                                 minval=-1.0, maxval=1.0)
    return state, actions


@pytest.mark.parametrize("task", ["hopper", "ant"])
def test_ffi_step_equals_mj_step_from_python(task):
    """Oracle: the same state stepped by the mujoco Python bindings one env at a time."""
    env = envs.make(task, backend="mujoco", wrap=False)
    physics = env.physics
    assert physics._ffi_model_id is not None
    state, actions = _random_batch(env, 13, seed=3)  # 13: uneven split over threads
    after = jax.jit(jax.vmap(physics.step))(state.pipeline_state, actions)
    m, data = physics.model, mujoco.MjData(physics.model)
    for i in range(13):
        data.qpos[:] = np.asarray(state.pipeline_state.qpos[i], np.float64)
        data.qvel[:] = np.asarray(state.pipeline_state.qvel[i], np.float64)
        data.qacc_warmstart[:] = np.asarray(state.pipeline_state.qacc_warmstart[i], np.float64)
        data.ctrl[:] = np.asarray(actions[i], np.float64)
        mujoco.mj_step(m, data, nstep=physics.frame_skip)
        np.testing.assert_allclose(after.qpos[i], data.qpos, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(after.qvel[i], data.qvel, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(after.xpos_main[i], data.xpos[physics.main_body],
                                   rtol=1e-5, atol=1e-5)
        if physics.contact_forces:
            mujoco.mj_rnePostConstraint(m, data)
            np.testing.assert_allclose(after.cfrc_ext[i], data.cfrc_ext.reshape(-1),
                                       rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("batch", [1, 64])
def test_ffi_and_callback_paths_agree(batch):
    """The fallback (Python threads + pure_callback) and the C++ path give the same step, on
    a batch small enough for one thread and one split over the pool."""
    env = envs.make("ant", backend="mujoco", wrap=False)
    state, actions = _random_batch(env, batch, seed=5)
    physics = env.physics
    ffi_out = jax.jit(jax.vmap(physics.step))(state.pipeline_state, actions)
    model_id, physics._ffi_model_id = physics._ffi_model_id, None
    try:
        cb_out = jax.jit(jax.vmap(physics.step))(state.pipeline_state, actions)
    finally:
        physics._ffi_model_id = model_id
    for a, b in zip(jax.tree.leaves(ffi_out), jax.tree.leaves(cb_out), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_model_content_gets_the_same_id():
    """Ids are content hashes, so compiled programs (and JAX's persistent cache) are the same
    in every process; a dynamics override changes the model and so the id."""
    a = envs.make("hopper", backend="mujoco", wrap=False).physics._ffi_model_id
    b = envs.make("hopper", backend="mujoco", wrap=False).physics._ffi_model_id
    c = envs.make("hopper", backend="mujoco", wrap=False, gravity=0.5).physics._ffi_model_id
    assert a == b != c


def test_library_is_rebuilt_atomically(tmp_path, monkeypatch):
    """A build into an empty cache folder produces one library and no leftovers."""
    monkeypatch.setenv("OFFBENCH_CACHE", str(tmp_path))
    path = mujoco_ffi.build()
    assert path.exists() and path.parent == tmp_path / "ffi"
    assert [p.name for p in (tmp_path / "ffi").iterdir()] == [path.name]
