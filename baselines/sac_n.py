"""SAC-N (An et al. 2021, "Uncertainty-Based Offline Reinforcement Learning with Diversified
Q-Ensemble"), and LB-SAC (Nikulin et al. 2022, "Q-Ensemble for Offline RL: Don't Scale the
Ensemble, Scale the Batch Size") as a preset of it.

SAC with N critics (one vmapped `CriticEnsemble`); the soft target is the minimum over ALL N
target critics, y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')), and the actor
maximizes min_i Q_i(s, a) + entropy. The pessimism comes only from the size of the ensemble: the
minimum of N critics penalizes actions on which they disagree (out-of-distribution ones).

This is `baselines/sac.py` with num_critics = num_target_critics = N and actor_q = "min";
`init` builds the SAC state from a `sac.Config` translated from this module's `Config`, and
`update`, `act` and `policy_params` are sac.py's. The only addition is the EDAC-style
initialization (`edac_init`) that the authors' code, and CORL, use.

Defaults are CORL's `sac_n.py` (which follows the authors' code, snu-mllab/EDAC): 3x256 ReLU
nets, Adam 3e-4 for actor, critics and temperature, batch 256, gamma 0.99, tau 5e-3, initial
temperature 1, target entropy -|A|, entropy in the backup, no observation or reward
normalization, 3M updates (`offbench run --updates 3000000`).

N is per dataset (CORL configs, as in the paper): halfcheetah 10; walker2d 20; hopper-medium 500,
hopper-medium-replay and hopper-medium-expert 200. The default N=10 is halfcheetah's; choose
others with `--set num_critics=500`.

LB-SAC (the `LB_SAC` preset): the same algorithm with batch 10,000 and every learning rate
scaled by the square-root rule, 3e-4 * sqrt(10000/256) ~ 0.0018, no EDAC initialization, 350k
updates and a smaller N per dataset (tinkoff-ai/lb-sac configs: halfcheetah-medium 4,
halfcheetah-medium-expert 8, halfcheetah-medium-replay 10, walker2d 10, hopper-medium 25 with
critic LayerNorm, hopper-medium-replay 20, hopper-medium-expert 40). From the CLI:

    offbench run sac_n walker2d-medium --updates 350000 --set batch_size=10000 \\
        --set actor_lr=0.0018 --set critic_lr=0.0018 --set temperature_lr=0.0018 \\
        --set edac_init=false --set num_critics=10 --set critic_layer_norm_shared=true

(hopper-medium adds `--set critic_layer_norm=true --set num_critics=25`). LB-SAC's critic
LayerNorm is as in CORL's lb_sac.py: one PyTorch `nn.LayerNorm(256)` after each hidden layer of
the batched ensemble, so every critic is normalized on its own but ONE scale and bias (and
their Adam state and target copy) serve all N critics, with PyTorch's epsilon 1e-5
(`critic_layer_norm_shared`, networks.CriticEnsemble(layer_norm="shared")). Without
`critic_layer_norm_shared`, `critic_layer_norm=true` gives every critic its own Flax LayerNorm
(epsilon 1e-6): offbench's own option for SAC-N (CORL's sac_n.py has no LayerNorm), used by the
diagnosis sweeps.

Known failure here: on our walker2d-medium-expert the critics can blow up together (mean Q far
above any return, temperature climbing) because they agree at the policy's off-data actions, so
the minimum over N -- even N=100 -- barely penalizes them; LayerNorm critics
(`--set critic_layer_norm=true`) stop it (results/offline/diagnosis-sacn-q.md). It is all
finite, so the loop does not flag it diverged: watch q_mean.

Known differences from CORL: sac.py updates critic, then actor, then temperature (CORL and the
authors' code: temperature, actor, critic); the temperature loss is alpha * (H - target) rather
than log_alpha * (H - target) (the same sign of step; Adam sees a rescaled gradient); the tanh
log-probability's Jacobian term is the exact log(1 - tanh(u)^2) (networks.py), where CORL's
SAC-N and LB-SAC use log(1 - tanh(u)^2 + 1e-6): the two agree while 1 - tanh(u)^2 >> 1e-6 and
part where the pre-tanh sample saturates (|u| >~ 5; the exact term keeps falling, -2|u| + log 4,
CORL's stops at log 1e-6), as LB-SAC's actor does under its large learning rates (actor
gradients ~1e-3 relative apart); the actor's log-std is squashed smoothly into [-5, 2]
(networks.py) instead of clipped, so with the small EDAC output initialization the initial policy
std is exp(-1.5) instead of 1; hidden-layer kernels keep Flax's LeCun-normal initialization
(PyTorch: uniform +-1/sqrt(fan_in)); the critic loss is sac.py's 0.5 * sum over critics of the
mean squared TD error (CORL: without 0.5; LB-SAC: the mean over critics as well), a constant
factor that Adam's update does not see (up to its epsilon).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from offbench.algorithms import EnvSpec
from offbench.networks import SHARED
from offbench_baselines import sac

MODES = ("offline", "o2o")


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256, 256)
    num_critics: int = 10  # N, per dataset (see the module docstring)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 5e-3
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_size
    backup_entropy: bool = True  # subtract alpha * log pi(a'|s') in the target
    critic_layer_norm: bool = False  # LB-SAC on hopper-medium
    # one LayerNorm's scale and bias shared by all N critics, PyTorch's epsilon (LB-SAC's)
    critic_layer_norm_shared: bool = False
    # Hidden biases 0.1, output layers uniform in +-3e-3 (critics) and +-1e-3 (actor), as in the
    # authors' code and CORL; LB-SAC turns it off.
    edac_init: bool = True
    normalize_obs: bool = False  # applied by the harness (offbench/loops/offline.py); CORL: none


# LB-SAC's large-batch setting (walker2d's N); N is per dataset, see the module docstring.
LB_SAC = Config(batch_size=10_000, actor_lr=0.0018, critic_lr=0.0018, temperature_lr=0.0018,
                num_critics=10, edac_init=False, critic_layer_norm_shared=True)

EDAC_BIAS = 0.1
EDAC_CRITIC_OUT = 3e-3
EDAC_ACTOR_OUT = 1e-3


def sac_config(config: Config) -> sac.Config:
    """The `sac.Config` SAC-N is: N critics, the target and the actor on the min over all N."""
    return sac.Config(hidden=tuple(config.hidden), actor_lr=config.actor_lr,
                      critic_lr=config.critic_lr, temperature_lr=config.temperature_lr,
                      batch_size=config.batch_size, discount=config.discount, tau=config.tau,
                      init_temperature=config.init_temperature,
                      target_entropy=config.target_entropy, num_critics=config.num_critics,
                      num_target_critics=config.num_critics, actor_q="min",
                      critic_layer_norm=critic_layer_norm(config), actor_layer_norm=False,
                      backup_entropy=config.backup_entropy)


def critic_layer_norm(config: Config) -> bool | str:
    """The critic ensemble's `layer_norm` (networks.CriticEnsemble): False, True (one per
    critic) or "shared" (one for all N)."""
    if config.critic_layer_norm and config.critic_layer_norm_shared:
        return SHARED
    return config.critic_layer_norm


def _edac_mlp(mlp: dict, key: jax.Array, out_bound: float) -> dict:
    """An MLP's parameters with hidden biases EDAC_BIAS and the output layer U(-b, b)."""
    dense = sorted((name for name in mlp if name.startswith("Dense_")),
                   key=lambda name: int(name.split("_")[1]))
    out = dict(mlp)
    for name in dense[:-1]:
        out[name] = {**mlp[name], "bias": jnp.full_like(mlp[name]["bias"], EDAC_BIAS)}
    last = mlp[dense[-1]]
    k_kernel, k_bias = jax.random.split(key)
    out[dense[-1]] = {
        "kernel": jax.random.uniform(k_kernel, last["kernel"].shape, last["kernel"].dtype,
                                     -out_bound, out_bound),
        "bias": jax.random.uniform(k_bias, last["bias"].shape, last["bias"].dtype,
                                   -out_bound, out_bound)}
    return out


def edac_initialization(state: sac.SACState, key: jax.Array) -> sac.SACState:
    """`state` with the EDAC initialization of actor and critics (target = critics)."""
    k_actor, k_critic = jax.random.split(key)
    actor = {"params": {**state.actor["params"],
                        "MLP_0": _edac_mlp(state.actor["params"]["MLP_0"], k_actor,
                                           EDAC_ACTOR_OUT)}}
    members = state.critic["params"]["VmapCritic_0"]
    critic = {"params": {**state.critic["params"], "VmapCritic_0": {
        **members, "MLP_0": _edac_mlp(members["MLP_0"], k_critic, EDAC_CRITIC_OUT)}}}
    actor_tx, critic_tx, _ = sac.optimizers(state.config)
    return state.replace(actor=actor, critic=critic, target_critic=critic,
                         actor_opt=actor_tx.init(actor), critic_opt=critic_tx.init(critic))


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None,
         dataset=None) -> sac.SACState:
    config = config or Config()
    if config.num_critics < 1:
        raise ValueError(f"num_critics must be at least 1, got {config.num_critics}")
    k_sac, k_edac = jax.random.split(key)
    state = sac.init(k_sac, spec, sac_config(config), dataset)
    return edac_initialization(state, k_edac) if config.edac_init else state


update = sac.update
act = sac.act
policy_params = sac.policy_params
q_values = sac.q_values
