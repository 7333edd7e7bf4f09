"""The algorithm module contract, the registry of `baselines/`, and typed config overrides.

An algorithm is one module `baselines/NAME.py` (or any importable module) defining:

    Config            a frozen dataclass whose defaults are the published hyperparameters
    MODES             the modes it supports, a subset of ("online", "offline", "o2o", "hybrid")
    init(key, spec, config, dataset=None) -> state          state: any pytree
    update(state, batch, key) -> (state, metrics)           one gradient step; metrics: dict
    act(state, obs, key, deterministic) -> action           actions in [-1, 1]

Optional hooks, and the Config fields the harness reads, are the `Contract` below (read once
per module by `contract(module)`, which checks their types): the one description of the plug-in
API that CONTRIBUTING.md and `offbench check` use.

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
    # the task and physics backend, set by the offline loop (None elsewhere): what a
    # true-dynamics model-based algorithm (MOPO's `dynamics = "true"`) steps
    task: str | None = None
    backend: str | None = None


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


# Config fields the harness reads when an algorithm's Config has them: name -> (types, default
# when the Config lacks it, what the harness does with it)
HARNESS_FIELDS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "normalize_obs": ((bool,), False, "offline loop: standardize observations with the "
                      "dataset's mean and std (env observations too in O2O/hybrid)"),
    "reward_scale": ((int, float), 1.0, "offline loop: r' = scale * r + bias"),
    "reward_bias": ((int, float), 0.0, "offline loop: r' = scale * r + bias"),
    "normalize_reward_by_returns": ((bool,), False, "offline loop: r' = r * 1000 / (max - min "
                                    "whole-episode return) (IQL's locomotion convention)"),
    "discount": ((int, float), 0.99, "discount of derived Monte-Carlo returns (mc_returns)"),
    "max_steps": ((int,), None, "set to the run's updates unless given: learning-rate "
                  "schedules span the run"),
    "batch_size": ((int,), None, "minibatch size (`offbench check` uses it)"),
    "utd": ((int,), 1, "O2O/hybrid: updates per env step"),
    "offline_ratio": ((int, float), 0.5, "O2O/hybrid: fraction of each online minibatch from "
                      "the dataset"),
    "warmup_steps": ((int,), 0, "O2O/hybrid: online env steps before the first update"),
    "warmup_actions": ((str,), "random", "O2O/hybrid: actions of the warm-up steps "
                       "(random or policy)"),
    "dynamics": ((str,), "learned", "offline loop: \"true\" (a model-based algorithm's "
                 "true-dynamics oracle) asks the loader for `physics`, each row's start physics "
                 "state (qpos ++ qvel), which reaches batch.extra and init's arrays when the "
                 "dataset carries it"),
}


OBS_STD_EPS = 1e-3  # TD3+BC's epsilon, so constant features do not blow up


def standardize_observations(arrays: dict) -> tuple[Any, Any]:
    """`normalize_obs` as the harness applies it (TD3+BC's and CORL's compute_mean_std):
    arrays["obs"] and arrays["next_obs"] replaced by (x - mean) / (std + OBS_STD_EPS) with the
    mean and std of arrays["obs"]; returns (mean, std + OBS_STD_EPS)."""
    mean = arrays["obs"].mean(0)
    std = arrays["obs"].std(0) + OBS_STD_EPS
    arrays["obs"] = (arrays["obs"] - mean) / std
    arrays["next_obs"] = (arrays["next_obs"] - mean) / std
    return mean, std


def config_field(config: Any, name: str) -> Any:
    """A harness-read Config field's value, or its HARNESS_FIELDS default when the Config
    lacks it."""
    return getattr(config, name, HARNESS_FIELDS[name][1])


@dataclasses.dataclass(frozen=True)
class Contract:
    """Everything the harness reads of an algorithm module, read once (`contract(module)`).

    Required: Config (a frozen dataclass of published defaults), MODES, init, update, act.
    Optional hooks (None when absent):
      policy_params(state) -> pytree     the parameters `act` uses (`train-online --snapshots`)
      online_update(state, batch, key)   used instead of `update` online in O2O/hybrid (WSRL, SPOT)
      q_values(state, obs, action) -> (num_critics, batch)   the critics' Q-values (`probe`)
      prepare_dataset(arrays, lengths, config) -> (arrays, lengths)   host-side data selection
      init_act_carry(state, n) -> carry   with act_carry, a policy with per-episode memory (DT's
      act_carry(state, carry, obs, reward, key, deterministic) -> (action, carry)   context):
                       evaluation starts each episode from init_act_carry for its n envs and
                       threads the carry through its steps; `reward` is the env's reward for
                       the previous action (raw, 0 at the first step). Plain `act` must still
                       act (as at an episode's first step) for tools without memory.
    Optional declarations:
      DATASET_FIELDS   derived dataset fields it needs (next_actions, mc_returns, ...)
      BATCH_FIELDS     "from_dataset": O2O/hybrid minibatches mark their dataset rows (H2O)
      SKIPS_METRICS    True when some metrics are NaN on updates that do not compute them (RLPD's
                       actor between its steps); otherwise a NaN metric means the seed diverged
      O2O_SETTINGS     Config values for the online phase of O2O runs (published fine-tuning)
      UNGUARDED_STATE  names of state fields the offline loop's divergence guard neither checks
                       nor rolls back (an append-only model buffer, MOPO's): `act` must not
                       read them, and a NaN in them must reach a guarded field to count
    """

    module: types.ModuleType
    Config: type
    modes: tuple[str, ...]
    init: Any
    update: Any
    act: Any
    policy_params: Any = None
    online_update: Any = None
    q_values: Any = None
    prepare_dataset: Any = None
    init_act_carry: Any = None
    act_carry: Any = None
    dataset_fields: tuple[str, ...] = ()
    batch_fields: tuple[str, ...] = ()
    skips_metrics: bool = False
    o2o_settings: dict = dataclasses.field(default_factory=dict)
    unguarded_state: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return getattr(self.module, "__name__", repr(self.module))


HOOKS = ("policy_params", "online_update", "q_values", "prepare_dataset", "init_act_carry",
         "act_carry")
DECLARATIONS = {"DATASET_FIELDS": "dataset_fields", "BATCH_FIELDS": "batch_fields",
                "SKIPS_METRICS": "skips_metrics", "O2O_SETTINGS": "o2o_settings",
                "UNGUARDED_STATE": "unguarded_state"}
_CONTRACTS: dict[str, Contract] = {}


def contract(module: types.ModuleType) -> Contract:
    """The module's Contract, checked once (one ValueError listing every problem). A Contract
    (e.g. o2o.online_view's, with `online_update` as its `update`) is its own."""
    if isinstance(module, Contract):
        return module
    # modules are kept (sys.modules), so their id is a safe key; other objects standing in
    # for a module (tests) are read anew each time
    cached = isinstance(module, types.ModuleType)
    key = f"{module.__name__}:{id(module)}" if cached else ""
    if cached and key in _CONTRACTS:
        return _CONTRACTS[key]
    where = f"algorithm module '{getattr(module, '__name__', module)}'"
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ValueError(f"{where} lacks {missing}; the contract needs {list(REQUIRED)} "
                         "(see offbench/algorithms.py)")
    problems = []
    config = module.Config
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append("Config must be a dataclass")
    modes = module.MODES
    if not (isinstance(modes, tuple) and modes and all(isinstance(m, str) for m in modes)):
        problems.append(f"MODES must be a non-empty tuple of mode names, got {modes!r}")
    for name in ("init", "update", "act", *HOOKS):
        if hasattr(module, name) and not callable(getattr(module, name)):
            problems.append(f"`{name}` must be a function")
    if hasattr(module, "act_carry") != hasattr(module, "init_act_carry"):
        problems.append("`act_carry` and `init_act_carry` go together: define both or neither")
    values = {field: getattr(module, attr) for attr, field in DECLARATIONS.items()
              if hasattr(module, attr)}
    for field in ("dataset_fields", "batch_fields", "unguarded_state"):
        if field in values:
            value = values[field] = tuple(values[field]) if isinstance(
                values[field], list | tuple) else values[field]
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                problems.append(f"{field.upper()} must be a tuple of field names")
    if not isinstance(values.get("skips_metrics", False), bool):
        problems.append("SKIPS_METRICS must be True or False")
    names = ({f.name: f for f in dataclasses.fields(config)}
             if dataclasses.is_dataclass(config) else {})
    settings = values.get("o2o_settings", {})
    if not isinstance(settings, dict) or set(settings) - set(names):
        problems.append(f"O2O_SETTINGS must be a dict of Config fields, got {settings!r}")
    if names:
        try:
            defaults = config()
        except TypeError as err:
            problems.append(f"Config() must build with its defaults ({err})")
            defaults = None
        for name, (types_, _, _) in HARNESS_FIELDS.items():
            value = getattr(defaults, name, None)
            if (value is not None and (isinstance(value, bool) and bool not in types_
                                       or not isinstance(value, types_))):
                problems.append(f"Config.{name} must be {'/'.join(t.__name__ for t in types_)} "
                                f"(the harness reads it: {HARNESS_FIELDS[name][2]}), got "
                                f"{value!r}")
    if problems:
        raise ValueError(f"{where} breaks the contract: " + "; ".join(problems))
    result = Contract(module=module, Config=config, modes=modes, init=module.init,
                      update=module.update, act=module.act,
                      **{h: getattr(module, h, None) for h in HOOKS}, **values)
    if cached:
        _CONTRACTS[key] = result
    return result


def skips_metrics(algo: Any) -> bool:
    """Whether the algorithm reports a metric as NaN on updates that do not compute it."""
    return contract(algo).skips_metrics


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
        target = f"offbench_baselines.{target}"
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
    contract(module)  # one clear error for a module that breaks the contract
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
