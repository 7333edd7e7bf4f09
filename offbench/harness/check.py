"""`offbench check MODULE`: does an algorithm module keep the contract (offbench/algorithms.py)?

Each check prints one line, `ok` or `FAIL` with what is wrong in plain words; later checks that
need an earlier one to pass are skipped. On a tiny synthetic dataset (random transitions of the
declared sizes; no env, no files) it checks:

- the names: `Config`, `MODES`, `init`, `update`, `act`;
- `Config`: a frozen dataclass that builds with no arguments (its defaults are the published
  hyperparameters), with an int `batch_size` (the loops sample batches of that size);
- `MODES`: a non-empty tuple of known modes; `DATASET_FIELDS` (if any) are fields we derive;
- the optional hooks and the Config fields the harness reads have the types
  `offbench.algorithms.Contract` and `HARNESS_FIELDS` describe;
- `init` under `jit`, and under `vmap` over seed keys;
- `update` under `jit`: returns `(state, metrics)` with the state's structure, shapes and
  dtypes unchanged and a dict of finite scalar metrics, for several updates;
- `update` and `act` under `vmap` over seeds;
- `act`: shape (batch, action_size), finite, in [-1, 1], for deterministic and stochastic
  calls; deterministic actions do not depend on the key;
- determinism: the same keys give bit-identical states, metrics and actions in two separately
  traced runs (catches trace-time randomness such as numpy or time-based seeds);
- the offline mode, when declared: two evaluation periods of the real offline loop (its
  `prepare_dataset` hook, sampling, divergence guard, evaluation on hopper with 5-step
  episodes);
- the o2o and hybrid modes, when declared: the one compiled O2O/hybrid loop (offbench/loops/o2o.py)
  for a few updates and env steps on hopper, through the phase switch (o2o), with the
  algorithm's own offline ratio, UTD and warm-up actions (`online_update` if it has one).
- the online mode, when declared: the online loop of `offbench train-online`
  (offbench/loops/online.py) for 4 env steps on hopper with updates after one warm-up step, finite
  returns, no NaN/Inf in the parameters.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from offbench.data.loader import ALGORITHM_FIELDS as DERIVED_FIELDS
from offbench.loops.o2o import MIXED_MODES

VALID_MODES = ("online", "offline", *MIXED_MODES)
OBS, ACT, N = 11, 3, 512  # hopper-sized tiny problem


class CheckFailed(Exception):
    pass


def load_module(target: str) -> types.ModuleType:
    """A .py file path, a dotted module path, or a name in baselines/ (as `offbench run`)."""
    from offbench.algorithms import import_algorithm_module

    try:
        return import_algorithm_module(target)
    except ValueError as err:
        raise CheckFailed(str(err)) from None


def tiny_dataset(fields: tuple[str, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"obs": rng.normal(size=(N, OBS)).astype(np.float32),
              "action": rng.uniform(-1, 1, (N, ACT)).astype(np.float32),
              "reward": rng.normal(size=N).astype(np.float32),
              "next_obs": rng.normal(size=(N, OBS)).astype(np.float32),
              "terminal": (rng.uniform(size=N) < 0.05).astype(np.float32)}
    if "next_actions" in fields:
        arrays["next_actions"] = rng.uniform(-1, 1, (N, ACT)).astype(np.float32)
    if "mc_returns" in fields:
        arrays["mc_returns"] = rng.normal(size=N).astype(np.float32) * 10
    if "physics" in fields:  # hopper's physics state of each observation: x = 0, qpos[1:], qvel
        arrays["physics"] = np.concatenate([np.zeros((N, 1), np.float32), arrays["obs"]], 1)
    return arrays


class Checker:
    def __init__(self, module: types.ModuleType, overrides: list[str], updates: int = 3,
                 log: Callable[[str], None] = print):
        self.module, self.overrides, self.updates, self.log = module, overrides, updates, log
        self.failures: list[str] = []

    def step(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except CheckFailed as err:
            self.failures.append(f"{what}: {err}")
            self.log(f"FAIL  {what}: {err}")
            return None
        except Exception as err:  # noqa: BLE001 - any error is a finding, in plain words
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            message = f"raised {type(err).__name__}: {first}"
            if isinstance(err, _tracer_errors()):
                message = ("not jittable: a traced value is used in Python control flow or "
                           "converted to a Python/numpy value (if, while, bool(), float(), "
                           f"np.asarray); use jnp.where or jax.lax.cond ({message})")
            self.failures.append(f"{what}: {message}")
            self.log(f"FAIL  {what}: {message}")
            return None
        self.log(f"ok    {what}")
        return True if result is None else result

    # -- the checks ---------------------------------------------------------------------------

    def names(self) -> None:
        from offbench.algorithms import REQUIRED

        missing = [n for n in REQUIRED if not hasattr(self.module, n)]
        if missing:
            raise CheckFailed(f"the module does not define {', '.join(missing)}; every "
                              f"algorithm module needs {', '.join(REQUIRED)}")
        for name in ("init", "update", "act"):
            if not callable(getattr(self.module, name)):
                raise CheckFailed(f"`{name}` is not a function")

    def config(self) -> Any:
        from offbench.algorithms import apply_overrides

        cls = self.module.Config
        if not dataclasses.is_dataclass(cls):
            raise CheckFailed("`Config` is not a dataclass; write @dataclasses.dataclass("
                              "frozen=True) class Config with the published defaults")
        if not cls.__dataclass_params__.frozen:
            raise CheckFailed("`Config` is not frozen; use @dataclasses.dataclass(frozen=True) "
                              "(the config lives in the state as static, hashable data)")
        try:
            config = cls()
        except TypeError as err:
            raise CheckFailed(f"`Config()` needs arguments ({err}); give every field a "
                              "default (the published hyperparameter)") from None
        batch = getattr(config, "batch_size", None)
        if not isinstance(batch, int) or batch <= 0:
            raise CheckFailed("`Config` needs a positive int `batch_size` (the harness samples "
                              "batches of that size)")
        return apply_overrides(config, self.overrides)

    def modes(self) -> None:
        modes = self.module.MODES
        if not isinstance(modes, tuple | list) or not modes:
            raise CheckFailed("`MODES` must be a non-empty tuple, e.g. (\"offline\",)")
        bad = [m for m in modes if m not in VALID_MODES]
        if bad:
            raise CheckFailed(f"unknown modes {bad} in MODES; valid: {list(VALID_MODES)}")
        fields = tuple(getattr(self.module, "DATASET_FIELDS", ()))
        bad = [f for f in fields if f not in DERIVED_FIELDS]
        if bad:
            raise CheckFailed(f"DATASET_FIELDS names {bad}, which the harness does not derive; "
                              f"it can give {list(DERIVED_FIELDS)}")

    def contract(self) -> Any:
        from offbench.algorithms import contract

        try:
            return contract(self.module)
        except ValueError as err:
            raise CheckFailed(str(err)) from None

    def run(self) -> bool:
        import jax

        if self.step("names: Config, MODES, init, update, act", self.names) is None:
            return False
        config = self.step("Config: frozen dataclass with defaults and batch_size", self.config)
        self.step("MODES and DATASET_FIELDS", self.modes)
        hooks = self.step("optional hooks and the Config fields the harness reads "
                          "(offbench.algorithms.Contract)", self.contract)
        if config is None or hooks is None:
            return False
        from offbench.algorithms import EnvSpec, config_field, skips_metrics
        from offbench.loops.o2o import with_source_marks
        from offbench.loops.offline import sample as sample_rows

        m = self.module

        def sample(arrays, key, batch_size):
            batch = sample_rows(arrays, key, batch_size)
            if "from_dataset" in hooks.batch_fields:
                # as the hybrid loop marks them (H2O): the first half dataset rows, the rest env
                batch = with_source_marks(batch, batch_size // 2)
            return batch

        # hopper's sizes and name: a true-dynamics model-based algorithm (`--set dynamics=true`)
        # steps hopper's env from the synthetic observations (the C backend: no compile wait)
        spec = EnvSpec(OBS, ACT, "hopper", "mujoco")
        fields = hooks.dataset_fields
        if config_field(config, "dynamics") == "true":  # as offline.load_dataset asks for it
            fields += ("physics",)
        arrays = {k: jax.numpy.asarray(v) for k, v in tiny_dataset(fields).items()}
        batch_size = min(config.batch_size, N)
        obs = arrays["obs"][:7]

        def init_fn(key):
            return m.init(key, spec, config, arrays)

        state = self.step("init under jit", lambda: jax.jit(init_fn)(jax.random.PRNGKey(0)))
        if state is None:
            return False

        def train(key):  # init + a few updates, each a fresh trace (see determinism)
            s = jax.jit(lambda k: init_fn(k))(key)
            update = jax.jit(lambda s, b, k: m.update(s, b, k))
            history = []
            for i in range(n_updates):
                k_batch, k_update = jax.random.split(jax.random.fold_in(key, i))
                out = update(s, sample(arrays, k_batch, batch_size), k_update)
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise CheckFailed("update must return (state, metrics), got "
                                      f"{type(out).__name__}")
                new, metrics = out
                _same_structure(s, new)
                _scalar_metrics(metrics, i + 1, skips_metrics(m))
                s = new
                history.append(metrics)
            _finite_somewhere(history)
            return s, history

        # an algorithm that steps some networks once per `utd` updates (RLPD's actor) reports
        # their metrics as NaN in between: run enough updates to see each metric computed
        n_updates = max(self.updates, int(config_field(config, "utd") or 1))
        trained = self.step(f"update under jit: {n_updates} updates keep the state's "
                            "shapes, metrics finite scalars", lambda: train(jax.random.PRNGKey(1)))

        def check_act(s) -> None:
            act = jax.jit(lambda s, o, k, d: m.act(s, o, k, d), static_argnums=3)
            for deterministic in (True, False):
                a = np.asarray(act(s, obs, jax.random.PRNGKey(2), deterministic))
                word = "deterministic" if deterministic else "stochastic"
                if a.shape != (obs.shape[0], ACT):
                    raise CheckFailed(f"{word} act returned shape {a.shape} for {obs.shape[0]} "
                                      f"observations; expected ({obs.shape[0]}, {ACT}) "
                                      "(batch, action_size)")
                if not np.isfinite(a).all():
                    raise CheckFailed(f"{word} act returned NaN/Inf actions")
                if np.abs(a).max() > 1.0 + 1e-6:
                    raise CheckFailed(f"{word} act returned actions outside [-1, 1] (max "
                                      f"|a| = {np.abs(a).max():.3g}); squash or clip them")
            a1 = np.asarray(act(s, obs, jax.random.PRNGKey(3), True))
            a2 = np.asarray(act(s, obs, jax.random.PRNGKey(4), True))
            if not np.array_equal(a1, a2):
                raise CheckFailed("deterministic act gives different actions for different "
                                  "keys; with deterministic=True the key must not matter")

        self.step("act: shapes, finite, within [-1, 1]", lambda: check_act(
            trained[0] if trained else state))

        def vmapped() -> None:
            keys = jax.random.split(jax.random.PRNGKey(5), 2)
            states = jax.jit(jax.vmap(init_fn))(keys)
            batches = jax.vmap(lambda k: sample(arrays, k, batch_size))(keys)
            new, metrics = jax.jit(jax.vmap(m.update))(states, batches, keys)
            _same_structure(states, new)
            _scalar_metrics(jax.tree.map(lambda x: x[0], metrics), 1, skips_metrics(m))
            actions = jax.jit(jax.vmap(lambda s, k: m.act(s, obs, k, True)))(new, keys)
            if actions.shape != (2, obs.shape[0], ACT):
                raise CheckFailed(f"vmapped act returned shape {actions.shape}; expected "
                                  f"(2, {obs.shape[0]}, {ACT})")

        self.step("init, update and act under vmap over 2 seeds", vmapped)

        def determinism() -> None:
            (s1, h1), (s2, h2) = trained, train(jax.random.PRNGKey(1))
            for a, b in zip(jax.tree.leaves((s1, h1)), jax.tree.leaves((s2, h2)), strict=True):
                if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                    raise CheckFailed(
                        "two runs with the same keys gave different numbers; init and update "
                        "must use only the keys they are given (no numpy/Python random, "
                        "time or global state)")
            act = [np.asarray(jax.jit(lambda s, o, k: m.act(s, o, k, False))(
                s, obs, jax.random.PRNGKey(6))) for s in (s1, s1)]
            if not np.array_equal(*act):
                raise CheckFailed("act with the same key and state gave different actions")

        if trained is not None:
            self.step("determinism: same keys -> bit-identical results", determinism)
        if "offline" in tuple(m.MODES) and not self.failures:
            self.step("offline mode: 2 periods of the offline loop on hopper (episodes of 5 "
                      "steps), finite returns, no divergence",
                      lambda: self.offline_loop(config, fields))
        if "online" in tuple(m.MODES) and not self.failures:
            self.step("online mode: the online loop on hopper (4 env steps with updates after "
                      "1 warm-up step), finite returns and parameters",
                      lambda: self.online_loop(config))
        for mode in MIXED_MODES:
            if mode in tuple(m.MODES) and not self.failures:
                phases = "2 offline updates, then " if mode == "o2o" else ""
                self.step(f"{mode} mode: the O2O/hybrid loop on hopper ({phases}4 env steps "
                          "with updates), finite returns, no divergence",
                          lambda mode=mode: self.mixed_loop(config, fields, mode))
        return not self.failures

    def offline_loop(self, config: Any, fields: tuple[str, ...]) -> None:
        """The declared offline mode end to end: offline.py's prepare_dataset hook, sampling,
        the scanned updates with the divergence guard, and evaluation on a real (short) env."""
        import jax

        from offbench.loops import offline

        m = self.module
        arrays = tiny_dataset(fields)
        lengths = np.full(N // 64, 64)
        if self.contract().prepare_dataset is not None:
            arrays, lengths = m.prepare_dataset(arrays, lengths, config)
        arrays = {k: jax.numpy.asarray(v) for k, v in arrays.items()}
        loop = offline.OfflineConfig(updates=4, eval_every=2, eval_episodes=2, episode_length=5,
                                     backend="mujoco")
        problem = offline.Problem(m, config, "hopper", loop, np.zeros(OBS, np.float32),
                                  np.ones(OBS, np.float32), 0.0, 1.0)
        carry = offline.init_carry(problem, jax.random.PRNGKey(7), 0, arrays)
        chunk = jax.jit(offline.make_chunk(problem, loop.periods))
        carry, (metrics, _) = chunk(carry, 0, arrays)
        if bool(carry.diverged):
            raise CheckFailed(f"the offline loop froze the seed: parameters or losses turned "
                              f"NaN/Inf at update {int(carry.diverged_at)}")
        returns = np.asarray(metrics["eval_return"])
        if returns.shape != (loop.periods,) or not np.isfinite(returns).all():
            raise CheckFailed(f"evaluation returns are {returns}; expected finite numbers")


    def online_loop(self, config: Any) -> None:
        """The declared online mode end to end in offbench/loops/online.py's compiled loop: env
        steps into the replay buffer, updates, evaluation on a real (short) env."""
        import jax

        from offbench.loops import offline, online

        loop = online.OnlineConfig(env_steps=4, warmup_steps=1, eval_every=2, eval_episodes=2,
                                   checkpoint_every=2, episode_length=5, backend="mujoco")
        problem = online.Problem(self.module, config, "hopper", loop)
        carry = online.init_carry(problem, jax.random.PRNGKey(9))
        chunk = jax.jit(online.make_chunk(problem, loop.periods))
        carry, (metrics, _) = chunk(carry, 0)
        if not bool(offline.all_finite(carry.algo)):
            raise CheckFailed("the online loop left NaN/Inf in the algorithm's state")
        returns = np.asarray(metrics["eval_return"])
        if returns.shape != (loop.periods,) or not np.isfinite(returns).all():
            raise CheckFailed(f"evaluation returns are {returns}; expected {loop.periods} "
                              "finite numbers")

    def mixed_loop(self, config: Any, fields: tuple[str, ...], mode: str) -> None:
        """A declared o2o or hybrid mode end to end in offbench/loops/o2o.py's compiled loop: mixed
        minibatches, the phase switch, env steps on a real (short) env, evaluation."""
        import jax

        from offbench.loops import o2o, offline

        m = self.module
        arrays = tiny_dataset(fields)
        lengths = np.full(N // 64, 64)
        if self.contract().prepare_dataset is not None:
            arrays, lengths = m.prepare_dataset(arrays, lengths, config)
        prepared = offline.Prepared({k: jax.numpy.asarray(v) for k, v in arrays.items()},
                                    np.zeros(OBS, np.float32), np.ones(OBS, np.float32), 1.0, 0.0)
        # warm-up shortened to fit 4 env steps; who acts in it stays the algorithm's choice
        loop = o2o.resolve(o2o.MixedConfig(
            mode=mode, offline_updates=2 if mode == "o2o" else 0, online_steps=4, eval_every=2,
            eval_episodes=2, checkpoint_every=2, warmup_steps=1, episode_length=5,
            backend="mujoco"), config)
        problem = o2o.Problem(m, config, "hopper", loop, prepared, 0.0, 1.0)
        periods = loop.offline_periods + loop.online_periods
        carry = o2o.init_carry(problem, jax.random.PRNGKey(8), jax.numpy.asarray(0),
                               prepared.arrays)
        chunk = jax.jit(o2o.make_chunk(problem, periods))
        carry, (metrics, _) = chunk(carry, 0, prepared.arrays)
        if bool(carry.diverged):
            raise CheckFailed(f"the {mode} loop froze the seed: parameters or losses turned "
                              f"NaN/Inf at update {int(carry.diverged_at)}")
        returns = np.asarray(metrics["eval_return"])
        if returns.shape != (periods,) or not np.isfinite(returns).all():
            raise CheckFailed(f"evaluation returns are {returns}; expected {periods} finite "
                              "numbers")


def _tracer_errors() -> tuple[type, ...]:
    import jax

    names = ("ConcretizationTypeError", "TracerBoolConversionError",
             "TracerIntegerConversionError", "TracerArrayConversionError")
    return tuple(getattr(jax.errors, n) for n in names if hasattr(jax.errors, n))


def _same_structure(old: Any, new: Any) -> None:
    import jax

    s_old, s_new = jax.tree.structure(old), jax.tree.structure(new)
    if s_old != s_new:
        raise CheckFailed("update returned a state whose tree structure differs from its "
                          "input (add or remove no fields; keep static data static)")
    for path_leaf, b in zip(jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new),
                            strict=True):
        path, a = path_leaf
        a, b = np.asarray(a), np.asarray(b)
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise CheckFailed(f"update changed {jax.tree_util.keystr(path)} from "
                              f"{a.dtype}{list(a.shape)} to {b.dtype}{list(b.shape)}; a state "
                              "must keep its shapes and dtypes (lax.scan carries it)")


def _scalar_metrics(metrics: Any, update: int, skips: bool) -> None:
    """Scalars, never infinite; NaN only where the module declares `SKIPS_METRICS` (then it
    means "not computed in this update", which `_finite_somewhere` checks across updates)."""
    if not isinstance(metrics, dict):
        raise CheckFailed(f"update's metrics must be a dict of scalars, got "
                          f"{type(metrics).__name__}")
    for name, value in metrics.items():
        value = np.asarray(value)
        if value.shape != ():
            raise CheckFailed(f"metric '{name}' has shape {value.shape}; metrics must be "
                              "scalars (reduce them with a mean)")
        if np.isinf(value):
            raise CheckFailed(f"metric '{name}' is {value} after update {update} on a tiny "
                              "random dataset; losses must stay finite")
        if np.isnan(value) and not skips:
            raise CheckFailed(f"metric '{name}' is nan after update {update} on a tiny random "
                              "dataset; the loops take a NaN loss for divergence. If the "
                              "update leaves it out on purpose, set SKIPS_METRICS = True")


def _finite_somewhere(history: list[dict]) -> None:
    for name in history[0]:
        values = np.asarray([h[name] for h in history])
        if not np.isfinite(values).any():
            raise CheckFailed(
                f"metric '{name}' is nan after every one of {len(history)} updates on a tiny "
                "random dataset; losses must stay finite (NaN is only for a metric not "
                "computed in some updates, e.g. an actor stepped once per UTD updates)")


def check(target: str, overrides: list[str] | None = None, updates: int = 3,
          log: Callable[[str], None] = print) -> bool:
    """Run every check on the module `target`; True if it keeps the contract."""
    try:
        module = load_module(target)
    except Exception as err:  # noqa: BLE001
        log(f"FAIL  import {target}: {type(err).__name__}: {err}")
        return False
    log(f"checking {module.__name__} ({getattr(module, '__file__', '?')})")
    ok = Checker(module, overrides or [], updates, log).run()
    log("PASS: the module keeps the algorithm contract" if ok else
        "the module does not keep the algorithm contract (see FAIL lines above)")
    return ok
