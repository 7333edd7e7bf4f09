"""Build, load and call the C++ XLA FFI handler that steps MuJoCo (`mujoco_ffi.cc`).

The handler is compiled once per (source, mujoco, jaxlib) combination into the cache folder
(`$OFFBENCH_CACHE/ffi`, default `~/.cache/offbench/ffi`) with the machine's C++ compiler, against
the headers shipped in the `mujoco` and `jaxlib` wheels and the `libmujoco` the `mujoco` package
already loaded. `make setup` builds it; otherwise the first use does (a few seconds). Where no
compiler is found the C backend falls back to `jax.pure_callback` (same results, slower at
small batches) and says so once. `OFFBENCH_MUJOCO_CALL=callback` forces the fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jaxlib
import mujoco
import numpy as np

TARGET = "offbench_mujoco_step"
SOURCE = Path(__file__).with_name("mujoco_ffi.cc")
_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_FAILED: str | None = None
_MODELS: dict[int, mujoco.MjModel] = {}  # registered models, kept alive for the handler


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("OFFBENCH_CACHE") or str(Path.home() / ".cache" / "offbench")
    return Path(root) / "ffi"


def _mujoco_lib() -> Path:
    pkg = Path(mujoco.__file__).parent
    libs = sorted(pkg.glob("libmujoco.so*"))
    if not libs:
        raise BuildError(f"no libmujoco.so* in {pkg}")
    return libs[0]


def library_path() -> Path:
    # The libmujoco path is part of the key: it is baked into the library's rpath.
    key = hashlib.sha256(SOURCE.read_bytes() + mujoco.__version__.encode()
                         + jaxlib.__version__.encode() + str(_mujoco_lib()).encode()
                         ).hexdigest()[:16]
    return cache_dir() / f"offbench_mujoco_ffi-{key}.so"


def build(verbose: bool = False) -> Path:
    """Compile the handler if it is not built yet; returns the shared library's path."""
    target = library_path()
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise BuildError("no C++ compiler found (install g++ or set CXX)")
    mj_lib = _mujoco_lib()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-pthread",
               "-w", str(SOURCE), "-o", str(staged),
               f"-I{jax.ffi.include_dir()}", f"-I{mj_lib.parent / 'include'}",
               str(mj_lib), f"-Wl,-rpath,{mj_lib.parent}"]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise BuildError(f"compiling {SOURCE.name} failed:\n{proc.stderr[-4000:]}")
        os.replace(staged, target)  # atomic: a concurrent build never sees half a library
    return target


def load() -> ctypes.CDLL | None:
    """The loaded handler library (registered with XLA), or None if it cannot be built."""
    global _LIB, _FAILED
    with _LOCK:
        if _LIB is not None or _FAILED is not None:
            return _LIB
        if os.environ.get("OFFBENCH_MUJOCO_CALL", "ffi") == "callback":
            _FAILED = "OFFBENCH_MUJOCO_CALL=callback"
            return None
        try:
            lib = ctypes.cdll.LoadLibrary(str(build()))
        except (BuildError, OSError) as err:
            _FAILED = str(err)
            warnings.warn(f"offbench: C++ MuJoCo step unavailable ({err}); the C backend uses "
                          "jax.pure_callback instead (same results, slower)", stacklevel=3)
            return None
        lib.OffbenchRegisterModel.argtypes = [ctypes.c_int64, ctypes.c_void_p]
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.OffbenchMujocoStep),
                                    platform="cpu")
        _LIB = lib
        return lib


def register_model(model: mujoco.MjModel) -> int:
    """Registers `model` with the handler under a content hash (stable across processes, so
    compiled programs stay cacheable) and returns that id."""
    lib = load()
    assert lib is not None
    buffer = np.zeros(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buffer)
    model_id = int.from_bytes(hashlib.sha256(buffer.tobytes()).digest()[:8], "little") >> 1
    with _LOCK:
        if model_id not in _MODELS:
            _MODELS[model_id] = model
            lib.OffbenchRegisterModel(model_id, model._address)
    return model_id


def step(packed: jax.Array, n_out: int, *, model_id: int, frame_skip: int, main_body: int,
         contact_forces: bool, nthread: int, min_chunk: int) -> jax.Array:
    """One env step of every row of `packed` (leading axes are batch axes)."""
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(packed.shape[:-1] + (n_out,),
                                                         packed.dtype),
                            vmap_method="expand_dims")
    return call(packed, model_id=np.int64(model_id), frame_skip=np.int64(frame_skip),
                main_body=np.int64(main_body), contact_forces=bool(contact_forces),
                nthread=np.int64(nthread), min_chunk=np.int64(min_chunk))
