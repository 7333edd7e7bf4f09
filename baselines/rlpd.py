"""RLPD (Ball, Smith, Kostrikov & Levine 2023, "Efficient Online Reinforcement Learning with
Offline Data"): SAC with a LayerNorm critic ensemble and a high update-to-data ratio, trained
online from scratch with every minibatch half dataset, half replay ("symmetric sampling").

Everything is `baselines/sac.py` (its critic and actor/temperature steps); what RLPD sets:

- an ensemble of `num_critics` 10 critics with LayerNorm; the TD target takes the min over a
  random subset of `num_target_critics` 2 target critics (REDQ);
- the actor maximizes the MEAN of the ensemble (sac's actor_q="mean");
- target entropy -|A|/2 (RLPD's SACLearner; SAC's is -|A|), entropy in the backup;
- `utd` 20 critic updates per env step, the actor and temperature stepped ONCE per `utd` updates
  (after the last critic step, on its minibatch), as RLPD's update(batch, utd_ratio) does;
- `offline_ratio` 0.5 of each minibatch from the dataset (read by the hybrid loop; any value in
  [0, 1] works here, RLPD's code takes batch * ratio by int(), we round).

Other defaults are RLPD's configs/sac_config.py + rlpd_config.py: 2x256 ReLU nets, Adam 3e-4 for
all, batch 256, gamma 0.99, tau 0.005, initial temperature 1. RLPD's train_finetuning.py takes
10k uniform random actions before learning (start_training): pass --warmup-steps 10000.
Where ours differs: RLPD's critic loss is the mean over the ensemble of the squared TD error;
sac.py's is 0.5 * the sum over critics (a constant factor, N/2, on the critics' gradient, mostly
absorbed by Adam); LayerNorm sits before the ReLU (offbench/networks.py).

AntMaze: RLPD's README runs AntMaze with `--config.backup_entropy=False
--config.hidden_dims="(256, 256, 256)" --config.num_min_qs=1` (no entropy in the backup, 3x256
nets, the target from ONE random critic of the ensemble), UTD 20. `MAZE_SETTINGS` (below) are
these but the network size (left to the spec), applied by tasks/sweeps/nav-hybrid-check.toml on
the fixed-goal PointMaze data; rewards stay the data's 0/1 (Config has no reward fields).

`utd` is the loop's too: `offbench run rlpd ... --utd N` (or --set utd=N) sets both.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from offbench.algorithms import EnvSpec, Transition
from offbench_baselines import sac
from offbench_baselines.sac import SACState, act, policy_params

MODES = ("online", "hybrid")
# the actor's and temperature's metrics are NaN on the updates between their steps
SKIPS_METRICS = True
# RLPD's AntMaze settings (module docstring), set per dataset by the navigation specs
MAZE_SETTINGS = {"backup_entropy": False, "num_target_critics": 1}
__all__ = ["Config", "MODES", "SKIPS_METRICS", "MAZE_SETTINGS", "init", "update", "act",
           "policy_params"]


@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    num_critics: int = 10
    num_target_critics: int = 2
    critic_layer_norm: bool = True
    actor_q: str = "mean"
    target_entropy: float | None = None  # None: -action_size / 2 (RLPD)
    utd: int = 20  # critic updates per env step; the actor steps once per utd updates
    offline_ratio: float = 0.5  # read by the hybrid loop


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> SACState:
    config = config or Config()
    if config.utd < 1:
        raise ValueError(f"utd must be >= 1, got {config.utd}")
    if config.target_entropy is None:
        config = dataclasses.replace(config, target_entropy=-spec.action_size / 2)
    return sac.init(key, spec, config)


def update(state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
    """A critic step; on every `utd`-th update also the actor and temperature steps. Actor
    metrics are NaN on the updates that skip them (loops average with nanmean)."""
    k_critic, k_actor = jax.random.split(key)
    state, critic_info = sac.critic_step(state, batch, k_critic)

    def actor(s):
        return sac.actor_temperature_step(s, batch, k_actor)

    def skip(s):
        shapes = jax.eval_shape(actor, s)[1]
        return s, jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), shapes)

    last = (state.steps + 1) % state.config.utd == 0
    state, actor_info = jax.lax.cond(last, actor, skip, state)
    return state.replace(steps=state.steps + 1), {**critic_info, **actor_info}
