"""HUBL, heuristic blending (Geng, Pacchiano, Kolobov & Cheng, ICLR 2024, "Improving Offline RL
by Blending Heuristics"), for the TD algorithms: their Bellman targets partly replaced by the
dataset's Monte-Carlo returns.

The paper defines HUBL as a relabeling of the data the base algorithm then learns from,
unchanged: with h(s') the Monte-Carlo return of the trajectory from s' on and a blending
factor lambda in [0, 1],

    r~ = r + gamma * lambda * h(s'),        gamma~ = gamma * (1 - lambda),

so a target r + gamma (1 - d) V(s') becomes r~ + gamma~ (1 - d) V(s'). Within an episode
h(s') = (G - r) / gamma with G the transition's discounted return-to-go (the harness's
`mc_returns`, in the units of the rewards the critic learns), and h(s') = 0 after a termination,
so the relabeled target is the convex blend

    y~ = (1 - lambda) * (r + gamma (1 - d) V(s')) + lambda * G,

which `blend` computes from the base algorithm's own target: one line in each algorithm
(td3_bc, iql, cql), a no-op (statically, the same compiled program) for a config without
`hubl_lambda` or with 0. The HUBL variants `td3_bc_hubl`, `iql_hubl` and `cql_hubl`
(baselines/) are those algorithms with a `hubl_lambda` field and the Monte-Carlo returns
asked of the harness (DATASET_FIELDS).

Why variant modules and not a field of the base Configs: a store cell is keyed by a hash of
its full config (offbench/harness/cells.py), so a new field, even at a default that changes
nothing, would re-key every stored TD3+BC, IQL, CQL (and SPOT, Cal-QL, H2O, WSRL) cell.

Declared choices:
- lambda is one constant per run (`hubl_lambda`, default 0.5: ours). The paper's
  trajectory-dependent lambda (larger for higher-return trajectories) needs a per-transition
  field the loops do not carry yet; its exact rule is not implemented here.
- h(s') is the return-to-go within the recorded episode, truncated at its end: for the last
  transition of an episode cut by the time limit (or by the end of the data) h(s') = 0, as a
  relabeling of finite trajectories gives.
- Offline only: online transitions have no return until their episode ends (the O2O loop marks
  them -inf); a row without a finite return keeps the plain target.
"""

from __future__ import annotations

import dataclasses
import sys

import jax.numpy as jnp

from offbench.algorithms import Transition

MODES = ("offline",)  # a variant's modes: online transitions have no return until episode end
DATASET_FIELDS = ("mc_returns",)  # G, computed by the harness from the rewards learned
DEFAULT_LAMBDA = 0.5  # ours: the paper sets lambda per trajectory (see the declared choices)


def lam(config) -> float:
    """The config's blending factor (0 when it has none)."""
    return float(getattr(config, "hubl_lambda", 0.0))


def check(config) -> None:
    """One clear error for a blending factor outside [0, 1]."""
    value = lam(config)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"hubl_lambda must be in [0, 1] (0: no blending, 1: Monte-Carlo "
                         f"returns only), got {value}")


def blend(target: jnp.ndarray, batch: Transition, config) -> jnp.ndarray:
    """(1 - lambda) * target + lambda * G (batch.extra["mc_returns"]); `target` unchanged when
    lambda is 0 or the config has none. Rows without a finite G keep `target`."""
    value = lam(config)
    if value == 0.0:
        return target
    if "mc_returns" not in batch.extra:
        raise ValueError("hubl_lambda > 0 needs batch.extra['mc_returns']: declare "
                         "DATASET_FIELDS = ('mc_returns',) (the *_hubl modules do)")
    mc = batch.extra["mc_returns"]
    blended = (1.0 - value) * target + value * mc
    return jnp.where(jnp.isfinite(mc), blended, target)


def variant(base, module_name: str):
    """The HUBL variant of algorithm module `base`, for the module `module_name` that exports
    it: `(Config, init)` with Config = base.Config plus `hubl_lambda` (default 0.5), and init
    checking it before `base.init`. The variant module re-exports base's update/act/etc. and
    sets MODES and DATASET_FIELDS to this module's."""
    config_class = dataclasses.make_dataclass(
        "Config", [("hubl_lambda", float, dataclasses.field(default=DEFAULT_LAMBDA))],
        bases=(base.Config,), frozen=True)
    # named as the variant module's own class: pickling, messages and run.json refer to it
    config_class.__module__ = module_name
    config_class.__qualname__ = "Config"
    config_class.__doc__ = (f"{base.__name__}.Config plus hubl_lambda, the weight of the "
                            "Monte-Carlo return in the critic target, in [0, 1].")

    def init(key, spec, config=None, dataset=None):
        config = config or config_class()
        check(config)
        return base.init(key, spec, config, dataset)

    init.__module__ = module_name
    init.__doc__ = f"{base.__name__}.init after checking hubl_lambda."
    assert module_name in sys.modules, "call variant(base, __name__) from the variant module"
    return config_class, init
