"""MOPO (Yu et al. 2020, "MOPO: Model-based Offline Policy Optimization").

A probabilistic dynamics ensemble (offbench/models/ensemble.py: 7 Gaussian MLPs, 5 elites)
is fitted to the dataset; SAC then learns from minibatches of which a fraction `real_ratio`
(0.05) are dataset transitions and the rest model transitions, produced by h-step rollouts of
the current (stochastic) policy in the model from dataset states, with the reward penalized by
the model's uncertainty:

    r~(s, a) = r^(s, a) - lambda u(s, a),   u(s, a) = max_e ||sigma_e(s, a)||_2

(sigma_e: member e's predicted std of (s' - s, r); r^ and s' drawn from a random elite).
SAC (baselines/sac.py, twin critics, the min in target and actor, automatic temperature):
y = r + gamma (1 - d)(min_i Q'_i(s', a') - alpha log pi(a'|s')).

How it plugs into the harness (no loop change): `init(key, spec, config, dataset)` fits the
ensemble on the prepared dataset arrays the offline loop gives it (one compiled while-loop,
vmapped over seeds like the rest of init) and fills the model buffer with the reference's first
rollout (rollout_batch_size start states drawn from the dataset). Every `update` then (1) takes
the start states of this update from the loop's dataset minibatch, (2) rolls them out h steps
into the on-device ring buffer in the state, (3) samples batch_size - int(real_ratio *
batch_size) model rows and (4) takes one SAC step on them plus the minibatch's first
int(real_ratio * batch_size) rows. So `update` stays pure and vmappable; the loop's
`batch_size` rows supply both the real rows and the start states (disjoint slices of one
uniform sample). The model's `model_holdout_mse` (elites' mean holdout MSE, raw units) and
`model_epochs` are in every row of metrics.csv. `init` needs the dataset (None is an error):
offbench doctor's memory estimate traces it on abstract arrays of the cell's size.

True dynamics (`--set dynamics=true`; default "learned"), the oracle of RAVL's question (Sims
et al. 2024, "The Edge-of-Reach Problem in Offline Model-Based Reinforcement Learning": does a
perfect model fix model-based offline RL?): no ensemble is fitted; rollouts step the task's
own env (the offline loop's task and backend, `EnvSpec.task`/`backend`, inside the compiled
program) from the start rows' own physics states, which offbench's locomotion datasets store
(the loop then gives them as the derived field `physics`, qpos ++ qvel: in `init`'s arrays
and `batch.extra`; any locomotion task, Ant included), or, where the dataset has none
(datasets built before they were stored, variants, Minari's: the loop says so on stderr),
from states rebuilt from the observations (planar tasks only: ant is refused there).
offbench/models/rollouts.py says what each leaves inexact: with stored states only the
solver's warm start and Ant's first-step main-body position; rebuilt, also Hopper's and
Walker2d's clipped velocities. The env's reward and termination are used. The uncertainty
penalty is 0: a deterministic true model has no uncertainty (max_e ||sigma_e|| = 0), so
`penalty_coef` has no effect (MOBILE's Bellman inconsistency is 0 likewise).
`model_holdout_mse` and `model_epochs` are in the metrics only with the learned model; the
cell's config records `dynamics`. Not in OfflineRL-Kit (RAVL ran its true-dynamics ablation
in its own code).

Defaults: OfflineRL-Kit's run_example/run_mopo.py (yihaosun1124/OfflineRL-Kit): SAC 2x256,
actor Adam 1e-4, critics 3e-4, temperature 1e-4 from alpha = 1, target entropy -|A|, gamma
0.99, tau 0.005, batch 256, real ratio 0.05, rollouts of 50,000 start states every 1000 updates,
model buffer of 5 rollouts' worth (model_retain_epochs), 3000 epochs x 1000 updates (3M,
`--updates 3000000`); the ensemble's settings are in ensemble.py. No observation or reward
normalization.

Per-dataset (h, lambda), `SETTINGS` below, applied with `--set rollout_length=H --set
penalty_coef=L`: OfflineRL-Kit's suggested hyperparameters for D4RL v2 (run_mopo.py docstring)
for medium, medium-replay and medium-expert; random from the MOPO authors' configs
(tianheyu927/mopo examples/config/d4rl/*_random.py, D4RL v0). The authors' v0 values for the
others, for reference: halfcheetah medium (1, 1.0), mixed (5, 1.0), medium-expert (5, 5.0);
hopper medium (5, 5.0), mixed (5, 1.0), medium-expert (5, 1.0); walker2d medium (5, 5.0),
mixed (1, 1.0), medium-expert (1, 2.0). Defaults h = 5, lambda = 2.5: hopper-medium-replay's.
The termination rule of model rollouts is the task's (offbench/models/rollouts.py; "auto"
recognizes it from the data, or `--set termination=walker2d`).

Declared differences from OfflineRL-Kit:
- rollouts are spread over updates: every update rolls out rollout_batch_size / rollout_freq
  (50) start states, instead of 50,000 every 1000 updates (the same rows per 1000 updates, and
  the buffer holds the same 5 x 50,000 x h newest rows); the first 50,000 are rolled out in
  `init` with the initial policy, as the reference's rollout at step 0;
- no cosine annealing of the actor's learning rate (OfflineRL-Kit anneals it over the 3000
  epochs; MOPO's authors' code does not); alpha is not clipped to [0, 1] (OfflineRL-Kit clips
  it after each step); sac.py's differences (temperature loss alpha (H - target), critic loss
  0.5 x sum over critics, log-std squashed into [-5, 2], Flax initialization);
- the ensemble's (ensemble.py: targets standardized too, minibatches drawn with replacement),
  and the rollouts' (rollouts.py: hopper's bound two-sided);
- the real rows and the start states are disjoint slices of the loop's minibatch (the
  reference draws them separately).

Cost of the model buffer: it is part of the state, so the offline loop's divergence guard
(offbench/loops/offline.py `keep_if_finite`: a finiteness check and a select over the state
after every update) would read and copy it every update: with the reference's buffer (1.25M
rows at h = 5) that made updates ~7x slower (6.4 vs 43.6 updates/s, 200 guarded updates on
hopper-sized synthetic rows, loaded 2-core CPU). MOPO declares `UNGUARDED_STATE = ("buffer",)`,
so the guard skips it (43.6 updates/s measured the same way with the skip): the buffer is
append-only and read by `update` only, and a non-finite row in it reaches the guarded SAC
parameters through the next step. A diverged seed's buffer keeps taking rows from its frozen
policy; its evaluations do not read the buffer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.models import ensemble, rollouts
from offbench_baselines import sac

MODES = ("offline",)
# the model buffer: append-only, read by update only; the divergence guard skips it
UNGUARDED_STATE = ("buffer",)

# (rollout_length h, penalty_coef lambda) per dataset kind: sources in the module docstring
SETTINGS = {
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 1.0), "walker2d-random": (1, 1.0),
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 2.5),
    "walker2d-medium-replay": (1, 2.5), "halfcheetah-medium-expert": (5, 2.5),
    "hopper-medium-expert": (5, 5.0), "walker2d-medium-expert": (1, 2.5),
}


_MODEL = ensemble.EnsembleConfig()
DYNAMICS = ("learned", "true")


@dataclasses.dataclass(frozen=True)
class Config:
    # SAC
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_size
    backup_entropy: bool = True  # subtract alpha * log pi(a'|s') in the target
    # model rollouts
    rollout_length: int = 5  # h, per dataset (SETTINGS)
    penalty_coef: float = 2.5  # lambda, per dataset (SETTINGS)
    real_ratio: float = 0.05
    rollout_batch_size: int = 50_000  # start states per rollout_freq updates
    rollout_freq: int = 1000
    model_retain_epochs: int = 5  # the buffer holds this many rollouts' rows
    termination: str = "auto"  # auto or one of rollouts.TERMINATIONS
    # "learned": the ensemble; "true": the task's own step (the true-dynamics oracle)
    dynamics: str = "learned"
    # dynamics ensemble (ensemble.EnsembleConfig)
    # the model's settings, flat for --set; defaults are offbench/models/ensemble.py's
    model_members: int = _MODEL.members
    model_elites: int = _MODEL.elites
    model_hidden: tuple[int, ...] = _MODEL.hidden
    model_weight_decay: tuple[float, ...] = _MODEL.weight_decay
    model_lr: float = _MODEL.lr
    model_batch_size: int = _MODEL.batch_size
    model_holdout_ratio: float = _MODEL.holdout_ratio
    model_max_holdout: int = _MODEL.max_holdout
    model_max_epochs_since_update: int = _MODEL.max_epochs_since_update
    model_max_epochs: int | None = _MODEL.max_epochs  # None: until early stopping


class MOPOState(struct.PyTreeNode):
    """The state of MOPO and its model-based siblings (each with its own Config)."""

    sac: sac.SACState
    model: ensemble.ModelState | None  # None with true dynamics
    buffer: rollouts.ModelBuffer
    termination: jax.Array  # index in rollouts.TERMINATIONS
    config: Any = struct.field(pytree_node=False)


def sac_config(config: Config) -> sac.Config:
    return sac.Config(hidden=tuple(config.hidden), actor_lr=config.actor_lr,
                      critic_lr=config.critic_lr, temperature_lr=config.temperature_lr,
                      batch_size=config.batch_size, discount=config.discount, tau=config.tau,
                      init_temperature=config.init_temperature,
                      target_entropy=config.target_entropy,
                      backup_entropy=config.backup_entropy)


def ensemble_config(config: Config) -> ensemble.EnsembleConfig:
    return ensemble.EnsembleConfig(
        members=config.model_members, elites=config.model_elites,
        hidden=tuple(config.model_hidden), weight_decay=tuple(config.model_weight_decay),
        lr=config.model_lr, batch_size=config.model_batch_size,
        holdout_ratio=config.model_holdout_ratio, max_holdout=config.model_max_holdout,
        max_epochs_since_update=config.model_max_epochs_since_update,
        max_epochs=config.model_max_epochs)


def sizes(config: Config) -> tuple[int, int]:
    """(real rows, start states) taken from each of the loop's minibatches."""
    real = int(config.batch_size * config.real_ratio)
    starts = config.rollout_batch_size // config.rollout_freq
    if starts < 1 or real + starts > config.batch_size:
        raise ValueError(f"each minibatch of {config.batch_size} must hold {real} real rows and "
                         f"{starts} start states (rollout_batch_size / rollout_freq >= 1)")
    return real, starts


def penalized(coef: float):
    """MOPO's reward: r - lambda * max_e ||sigma_e|| (the `reward_fn` of rollouts.rollout)."""
    return lambda reward, means, stds: reward - coef * ensemble.max_std_norm(stds)


def policy(sac_state: sac.SACState):
    return lambda obs, key: sac.act(sac_state, obs, key, False)


def model_step(state: MOPOState, start: jax.Array, key: jax.Array, reward_fn,
               physics: jax.Array | None = None) -> tuple[MOPOState, dict]:
    """state with the rollouts from `start` added to its buffer, and the rollouts' metrics
    (shared by MOPO and its siblings); with true dynamics the task's own step, unpenalized,
    from `physics`, the start rows' stored physics states (None: rebuilt from `start`)."""
    if state.config.dynamics == "true":
        spec = state.sac.spec
        rows, valid, info = rollouts.true_rollout(
            rollouts.true_env(spec.task, spec.backend, physics is None), policy(state.sac),
            start, state.config.rollout_length, key, physics)
    else:
        rows, valid, info = rollouts.rollout(state.model, policy(state.sac), start,
                                             state.config.rollout_length, key,
                                             state.termination, reward_fn)
    return state.replace(buffer=rollouts.add(state.buffer, rows, valid)), info


def start_physics(rows: dict, index) -> jax.Array | None:
    """The stored physics states of the start rows `index` of `rows` (init's dataset arrays or a
    minibatch's extra), when the dataset carries them (`physics`, given with dynamics=true)."""
    return rows["physics"][index] if "physics" in rows else None


def init_state(key: jax.Array, spec: EnvSpec, config, dataset, reward_fn) -> MOPOState:
    """A model-based SAC state (shared with MOPO's siblings): SAC, the fitted ensemble, the
    termination rule and the model buffer after the first rollout_batch_size start states."""
    if dataset is None:
        raise ValueError("a model-based algorithm fits its model in init: pass the dataset")
    _, starts = sizes(config)
    k_sac, k_model, k_fill = jax.random.split(key, 3)
    if config.dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {config.dynamics!r}")
    if config.dynamics == "true":
        if spec.task is None:
            raise ValueError("true dynamics step the task's env: the spec must name the task "
                             "(the offline loop's does)")
        # refuses what it cannot step (non-locomotion; non-planar without stored states)
        rollouts.true_env(spec.task, spec.backend, "physics" not in dataset)
        model = None
    else:
        model = ensemble.fit(k_model, dataset["obs"], dataset["action"], dataset["reward"],
                             dataset["next_obs"], ensemble_config(config))
    capacity = (config.rollout_batch_size * config.model_retain_epochs + starts) \
        * config.rollout_length
    state = MOPOState(sac=sac.init(k_sac, spec, sac_config(config)), model=model,
                      buffer=rollouts.empty(capacity, spec.observation_size, spec.action_size),
                      termination=rollouts.termination_code(config.termination, dataset["obs"]),
                      config=config)

    def fill(state, k):
        k_start, k_roll = jax.random.split(k)
        index = jax.random.randint(k_start, (starts,), 0, dataset["obs"].shape[0])
        return model_step(state, dataset["obs"][index], k_roll, reward_fn,
                          start_physics(dataset, index))[0], None
    return jax.lax.scan(fill, state, jax.random.split(k_fill, config.rollout_freq))[0]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key: jax.Array, spec: EnvSpec, config: Config, dataset) -> MOPOState:
    return init_state(key, spec, config, dataset, penalized(config.penalty_coef))


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None,
         dataset=None) -> MOPOState:
    """jitted as a whole (inlined when traced inside the loop's jit): called eagerly, the
    model fit would otherwise dispatch op by op."""
    if dataset is None:
        raise ValueError("a model-based algorithm fits its model in init: pass the dataset")
    return _init(key, spec, config or Config(), dataset)


def mixed_batch(state: MOPOState, batch: Transition, key: jax.Array) -> Transition:
    """The minibatch's real rows followed by model rows from the buffer."""
    real, _ = sizes(state.config)
    fake = rollouts.sample(state.buffer, key, state.config.batch_size - real)
    return jax.tree.map(lambda r, f: jnp.concatenate([r[:real], f.astype(r.dtype)]),
                        Transition(batch.obs, batch.action, batch.reward, batch.next_obs,
                                   batch.terminal), fake)


def model_metrics(state: MOPOState) -> dict:
    """The buffer's size, and the learned model's holdout error and epochs (not with true
    dynamics, which have no model)."""
    out = {"model_buffer_rows": state.buffer.size.astype(jnp.float32)}
    if state.model is not None:
        out.update(model_holdout_mse=state.model.holdout_mse,
                   model_epochs=state.model.epochs.astype(jnp.float32))
    return out


def update(state: MOPOState, batch: Transition, key: jax.Array) -> tuple[MOPOState, dict]:
    real, starts = sizes(state.config)
    k_roll, k_fake, k_sac = jax.random.split(key, 3)
    state, info = model_step(state, batch.obs[real:real + starts], k_roll,
                             penalized(state.config.penalty_coef),
                             start_physics(batch.extra, slice(real, real + starts)))
    sac_state, metrics = sac.update(state.sac, mixed_batch(state, batch, k_fake), k_sac)
    state = state.replace(sac=sac_state)
    return state, {**metrics, **info, **model_metrics(state)}


def act(state: MOPOState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    return sac.act(state.sac, obs, key, deterministic)


def policy_params(state: MOPOState) -> dict:
    return state.sac.actor


def q_values(state: MOPOState, obs: jax.Array, action: jax.Array) -> jax.Array:
    return sac.q_values(state.sac, obs, action)
