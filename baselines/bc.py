"""Behavioural cloning, and top-%BC (Chen et al. 2021; CORL's `any_percent_bc`).

A deterministic tanh MLP policy regressed onto the dataset's actions (mean squared error).
With `top_fraction` < 1 only the whole episodes with the highest returns are kept (10%BC:
top_fraction=0.1), as in "Decision Transformer" and CORL. Defaults follow CORL's configs
(configs/offline/bc, configs/offline/bc_10): 2x256 ReLU, Adam 3e-4, batch 256, observations
standardized with the (kept) dataset's statistics, 1M updates (`offbench run --updates
1000000`).

Top-%BC as CORL's keep_best_trajectories: an episode is whole if it ends in a termination or
has `max_episode_steps` (1000) steps; episodes cut short by the end of the data are neither
ranked nor kept; int(top_fraction x whole episodes) of them are kept (at least one), ranked by
undiscounted return (CORL's bc_10 configs set discount=1.0).

Where ours differ from CORL's any_percent_bc: hidden-layer kernels keep Flax's LeCun-normal
initialization (PyTorch: uniform +-1/sqrt(fan_in)); the default is plain BC (top_fraction=1,
CORL's bc configs; the script's own default is frac=0.1), 10%BC is `--set top_fraction=0.1`;
plain BC learns from every transition, while CORL's script runs its episode pass even at
frac=1.0 and so drops the trailing cut episode (our datasets hold one cut episode per
collection stream, so that pass would drop several); when no episode is whole, all are ranked
(CORL's would fail).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.data import stats as data_stats
from offbench.networks import MLP

MODES = ("offline",)


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)
    top_fraction: float = 1.0  # keep this fraction of whole episodes, best returns first
    max_episode_steps: int = 1000  # an episode this long is whole (CORL's max_traj_len)


class BCState(struct.PyTreeNode):
    actor: dict
    opt: optax.OptState
    steps: jax.Array
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def actor_net(config: Config, spec: EnvSpec) -> MLP:
    return MLP(config.hidden, spec.action_size)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> BCState:
    config = config or Config()
    if not 0.0 < config.top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {config.top_fraction}")
    actor = actor_net(config, spec).init(key, jnp.zeros((1, spec.observation_size)))
    return BCState(actor=actor, opt=optax.adam(config.lr).init(actor),
                   steps=jnp.zeros((), jnp.int32), config=config, spec=spec)


def policy(actor: dict, state: BCState, obs: jax.Array) -> jax.Array:
    return jnp.tanh(actor_net(state.config, state.spec).apply(actor, obs))


def loss(actor: dict, state: BCState, batch: Transition) -> tuple[jax.Array, dict]:
    error = jnp.mean((policy(actor, state, batch.obs) - batch.action) ** 2)
    return error, {"bc_loss": error}


def update(state: BCState, batch: Transition, key: jax.Array) -> tuple[BCState, dict]:
    grads, metrics = jax.grad(loss, has_aux=True)(state.actor, state, batch)
    updates, opt = optax.adam(state.config.lr).update(grads, state.opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)
    return state.replace(actor=actor, opt=opt, steps=state.steps + 1), metrics


def act(state: BCState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    return policy(state.actor, state, obs)


def policy_params(state: BCState) -> dict:
    return state.actor


def prepare_dataset(arrays: dict, lengths: np.ndarray, config: Config
                    ) -> tuple[dict, np.ndarray]:
    """Top-%BC: keep int(top_fraction x whole episodes) (at least 1) of the whole episodes with
    the highest undiscounted returns, as CORL's keep_best_trajectories. Whole: ended by a
    termination or at `max_episode_steps` steps; episodes cut short by the end of the data are
    never kept (all episodes are ranked only if none is whole)."""
    if config.top_fraction >= 1.0:
        return arrays, lengths
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    returns = data_stats.episode_returns(arrays["reward"], lengths)
    candidates = np.arange(len(lengths))
    whole = data_stats.whole_episodes(arrays["terminal"], lengths, config.max_episode_steps)
    if whole.any():
        candidates = candidates[whole]
    count = max(1, int(config.top_fraction * len(candidates)))
    keep = candidates[np.argsort(-returns[candidates], kind="stable")[:count]]
    keep.sort()
    index = np.concatenate([np.arange(starts[e], starts[e] + lengths[e]) for e in keep])
    return {k: v[index] for k, v in arrays.items()}, lengths[keep]
