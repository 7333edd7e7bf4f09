"""The algorithm module contract, the registry of `baselines/`, and typed config overrides.

An algorithm is one module `baselines/NAME.py` (or any importable module) defining:

    Config            a frozen dataclass whose defaults are the published hyperparameters
    MODES             the modes it supports, a subset of ("online", "offline", "o2o", "hybrid")
    init(key, spec, config, dataset=None) -> state          state: any pytree
    update(state, batch, key) -> (state, metrics)           one gradient step; metrics: dict
    act(state, obs, key, deterministic) -> action           actions in [-1, 1]

Optional: `policy_params(state) -> pytree`, the parameters `act` uses (saved by
`train-online --snapshots`, e.g. for behaviour policies); `online_update(state, batch, key)`,
used instead of `update` in the online phase of O2O/hybrid runs (WSRL, SPOT); `BATCH_FIELDS`
with "from_dataset" to have O2O/hybrid minibatches mark their dataset rows (H2O);
`q_values(state, obs, action) -> (num_critics, batch)`, the critics' Q-values (not the
targets'), read by `offbench probe` (offbench/reports/probe.py); `SKIPS_METRICS = True` when some
metrics are NaN on the updates that do not compute them (RLPD's actor between its steps, SPOT's
TD3 losses while its VAE trains). Without it a NaN metric is a NaN loss: the seed diverged.

`update` and `act` must be pure (jit- and vmap-able); the configuration lives inside `state`
as static data (see `baselines/sac.py`). The harness owns loops, sampling, vmapping over seeds,
evaluation, logging and checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import jax
from flax import struct

BASELINES_DIR = Path(__file__).resolve().parents[1] / "baselines"
REQUIRED = ("Config", "MODES", "init", "update", "act")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What an algorithm knows about its task."""

    observation_size: int
    action_size: int


@struct.dataclass
class Transition:
    """A batch of transitions. `terminal` is 1 only for true terminations (not time limits)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminal: jax.Array
    # Derived dataset fields an algorithm asked for (offline: next_actions, mc_returns, ...).
    extra: dict = struct.field(default_factory=dict)


def skips_metrics(algo: Any) -> bool:
    """Whether the algorithm reports a metric as NaN on updates that do not compute it."""
    return bool(getattr(algo, "SKIPS_METRICS", False))


def algorithm_names() -> list[str]:
    return sorted(p.stem for p in BASELINES_DIR.glob("*.py") if not p.stem.startswith("_"))


def import_algorithm_module(target: str) -> types.ModuleType:
    """The module `target` names: a name in baselines/, a dotted module path (importable where
    offbench is installed, or from the current directory, as `python -m` finds modules), or the
    path of a .py file. One ValueError saying what to give when it cannot be imported."""
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"algorithm file {target} does not exist")
        name = path.stem  # the module's name in cell configs and reports
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if "." not in target:
        if target not in algorithm_names():
            raise ValueError(f"unknown algorithm '{target}'; valid algorithms: "
                             f"{algorithm_names()} (or a dotted module path, or a .py file)")
        target = f"baselines.{target}"
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if err.name and target.startswith(err.name) and cwd not in sys.path:
            sys.path.insert(0, cwd)  # a module of the folder the user works in
            try:
                return importlib.import_module(target)
            except ModuleNotFoundError:
                sys.path.remove(cwd)
        raise ValueError(f"cannot import algorithm module '{target}' ({err}): give a module "
                         "importable from the current directory or installed, or the path of "
                         "its .py file") from None


def load_algorithm(name: str) -> types.ModuleType:
    """`name` from baselines/, a dotted module path or a .py file; checks the contract's names
    exist."""
    module = import_algorithm_module(name)
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ValueError(f"algorithm module '{module.__name__}' lacks {missing}; "
                         f"the contract needs {list(REQUIRED)} (see offbench/algorithms.py)")
    return module


def _parse_value(raw: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--set {key}={raw}: expected true or false")
    if annotation in (int, float, str):
        try:
            return annotation(raw)
        except ValueError:
            raise ValueError(f"--set {key}={raw}: expected {annotation.__name__}") from None
    if origin is tuple:
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        return tuple(_parse_value(v, item, key) for v in raw.strip("()[] ").split(",") if v)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() == "none":
            return None
        return _parse_value(raw, args[0], key)
    raise ValueError(f"--set {key}: cannot parse values of type {annotation}")


def config_from_dict(config_class: type, values: dict) -> Any:
    """A Config from its `dataclasses.asdict` record (run.json, settings.json, cell.json): JSON
    lists back to tuples where the field is a tuple; a key the class does not have is an error
    (the record was made by another version of the module)."""
    unknown = set(values) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise ValueError(f"{config_class.__module__}.Config has no field(s) {sorted(unknown)}: "
                         "the run was made by another version of the module")
    hints = typing.get_type_hints(config_class)
    return config_class(**{
        key: tuple(value) if isinstance(value, list)
        and typing.get_origin(hints.get(key)) is tuple else value
        for key, value in values.items()})


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """`config` with `key=value` overrides applied, typed by the dataclass annotations."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got '{item}'")
        if key not in hints:
            raise ValueError(f"unknown config key '{key}' for {type(config).__module__}.Config; "
                             f"valid keys: {sorted(hints)}")
        changes[key] = _parse_value(raw, hints[key], key)
    return dataclasses.replace(config, **changes)
