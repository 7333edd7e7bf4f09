"""SPOT (Wu, Wu, Qiu, Wang, Long & Wang 2022, "Supported Policy Optimization for Offline
Reinforcement Learning"): TD3 whose actor is kept inside the support of the behaviour policy by
a density estimate, a conditional VAE fitted on the dataset.

    VAE       encoder q(z|s,a) = N(mu, sigma^2) (log sigma clipped to [-4, 15]),
              decoder D(s, z) = tanh(MLP(s, z)), prior N(0, I), latent size 2|A|;
    -ELBO     L(s, a) = mean_d (D(s, z)_d - a_d)^2 + beta * mean_j KL_j,
              KL_j = -0.5 (1 + log sigma_j^2 - mu_j^2 - sigma_j^2), z = mu + sigma * eps,
              one sample eps ~ N(0, I): SPOT's estimate of -log pi_beta(a|s) (up to constants);
    VAE loss  mean_batch L(s, a_data), Adam `vae_lr`, for the first `vae_steps` updates, then
              frozen (SPOT fits the VAE to convergence before training the policy);
    critic    TD3's (baselines/td3_bc.py: twin critics, target smoothing, delayed actor);
    actor     -mean Q_1(s, pi(s)) / mean |Q_1(s, pi(s))| + lambda * mean L(s, pi(s)),
              the Q normalization a constant (no gradient), as in SPOT's code.

Fine-tuning (`online_update`, the O2O loop's hook): the same losses on the loop's minibatches
(dataset and env data at --offline-ratio) with lambda cooled linearly, lambda_t = lambda *
max(lambda_end, 1 - t / lambda_cool_steps) over online updates t, the schedule SPOT's code
offers for fine-tuning (`lambda_cool`, end 0.2); the VAE stays the dataset's density.

Defaults: the authors' D4RL locomotion settings (github.com/thuml/SPOT: main.py, train_vae.py,
configs/offline/*.yml): TD3's (Adam 3e-4, 2x256 nets, policy noise 0.2, clip 0.5, policy_freq
2, tau 5e-3, batch 256), VAE 2x750 with Adam 1e-3, beta 0.5, 100k VAE steps, states
standardized. lambda is set PER DATASET by the authors' configs (configs/offline/*.yml,
`lambd`); our default 1.0 is main.py's own default (halfcheetah-medium-expert's value); set the
others with `--set lmbda=...`:

                 medium   medium-replay   medium-expert
    halfcheetah  0.05     0.05            1.0
    hopper       0.1      0.1             0.2
    walker2d     0.2      0.2             0.5

(no config for random, expert, full-replay or ant.) Fine-tuning follows the authors'
configs/online_finetune/*.yml (AntMaze only): lambda cooling on, end 0.2.

AntMaze and the navigation tasks. SPOT's published AntMaze settings (the authors'
configs/online_finetune/antmaze*.yml; CORL's configs/finetune/spot/antmaze/*.yaml): rewards
r - 1, no state normalization, actor Adam 1e-4, output layers initialized U(+-1e-3) (actor) and
U(+-3e-3) (critic), lambda cooling to 0.2 online, an online discount of 0.995; lambda per
dataset:

                 umaze   umaze-diverse   medium-play   medium-diverse   large-play   large-diverse
    AntMaze      0.25    0.25            0.05          0.025            0.025        0.025

`MAZE_SETTINGS` (below; applied per dataset by tasks/sweeps/nav-*.toml) maps the fixed-goal
PointMaze data onto the diverse datasets (random goals, like ours) and sets actor_lr 1e-4 and
normalize_obs off. Not reproduced: r - 1 (Config has no reward field: the rewards stay 0/1;
the critic is unchanged by the scale, but the actor's Q normalization, 1 / mean |Q|, is not
shift-invariant, so the effective lambda differs by the ratio of mean |Q| under the two
conventions), the output-layer initialization (Flax's default) and the online discount (one
`discount` for both phases: 0.99).

Where ours differs: the VAE is trained inside the same run (the first `vae_steps` of
--offline-updates train only the VAE, so pass --offline-updates 1100000 for SPOT's 100k + 1M);
SPOT's actor has dropout 0.1 offline (main.py's actor_dropout), ours none; the authors'
fine-tuning configs use actor_lr 1e-4 (ours keeps 3e-4 unless set); Flax's default
initialization.

Cost: the VAE/TD3 switch is a `lax.cond` on the step counter, which vmapping over seeds turns
into a select, so a vmapped update computes both the VAE and the TD3 step (as TD3's delayed
actor step already does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from offbench.algorithms import EnvSpec, Transition
from offbench.networks import MLP
from offbench_baselines import td3_bc
from offbench_baselines.td3_bc import TD3State, act, policy, policy_params, q_values

MODES = ("offline", "o2o")
# the TD3 losses are NaN while the VAE trains, the VAE's loss after
SKIPS_METRICS = True
LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0
__all__ = ["Config", "MODES", "SKIPS_METRICS", "init", "update", "online_update", "act",
           "policy_params", "q_values", "neg_elbo"]


# The published AntMaze settings for the fixed-goal navigation data (module docstring): set per
# dataset by the navigation sweep specs, not defaults (cell ids unchanged).
_MAZE_COMMON = {"actor_lr": 1e-4, "normalize_obs": False}
MAZE_SETTINGS = {
    "pointmaze-umaze-fixed": {**_MAZE_COMMON, "lmbda": 0.25},
    "pointmaze-medium-fixed": {**_MAZE_COMMON, "lmbda": 0.025},
    "pointmaze-large-fixed": {**_MAZE_COMMON, "lmbda": 0.025},
}


@dataclasses.dataclass(frozen=True)
class Config(td3_bc.Config):
    lmbda: float = 1.0  # weight of the support constraint (per dataset in the paper)
    beta: float = 0.5  # KL weight of the ELBO
    vae_hidden: tuple[int, ...] = (750, 750)
    vae_lr: float = 1e-3
    vae_steps: int = 100_000  # first updates: the VAE alone
    lambda_cool: bool = True  # fine-tuning: lambda cooled linearly to lambda_end * lambda
    lambda_end: float = 0.2
    lambda_cool_steps: int = 1_000_000  # online updates over which lambda cools


class VAE(nn.Module):
    hidden: Sequence[int]
    action_size: int
    latent_size: int

    def setup(self):
        self.encoder = MLP(self.hidden, 2 * self.latent_size)
        self.decoder = MLP(self.hidden, self.action_size)

    def encode(self, obs: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, log_std = jnp.split(self.encoder(jnp.concatenate([obs, action], -1)), 2, -1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def decode(self, obs: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.tanh(self.decoder(jnp.concatenate([obs, z], -1)))

    def __call__(self, obs: jax.Array, action: jax.Array, noise: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, log_std = self.encode(obs, action)
        return self.decode(obs, mean + jnp.exp(log_std) * noise), mean, log_std


class SPOTState(TD3State):
    vae: dict
    vae_opt: optax.OptState
    online_steps: jax.Array  # fine-tuning updates so far (the lambda schedule's clock)


def vae_net(config: Config, spec: EnvSpec) -> VAE:
    return VAE(config.vae_hidden, spec.action_size, 2 * spec.action_size)


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> SPOTState:
    config = config or Config()
    if config.vae_steps < 0 or config.lambda_cool_steps < 1:
        raise ValueError("vae_steps must be >= 0 and lambda_cool_steps >= 1")
    k_td3, k_vae = jax.random.split(key)
    base = td3_bc.init_state(k_td3, spec, config)
    net = vae_net(config, spec)
    obs, action = jnp.zeros((1, spec.observation_size)), jnp.zeros((1, spec.action_size))
    vae = net.init(k_vae, obs, action, jnp.zeros((1, 2 * spec.action_size)))
    return SPOTState(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                     vae=vae, vae_opt=optax.adam(config.vae_lr).init(vae),
                     online_steps=jnp.zeros((), jnp.int32))


def neg_elbo(vae_params, state: SPOTState, obs: jax.Array, action: jax.Array, key: jax.Array
             ) -> jax.Array:
    """-ELBO of each (s, a) (shape (batch,)), one latent sample (module docstring)."""
    net = vae_net(state.config, state.spec)
    noise = jax.random.normal(key, (*action.shape[:-1], net.latent_size), action.dtype)
    recon, mean, log_std = net.apply(vae_params, obs, action, noise)
    kl = -0.5 * (1.0 + 2.0 * log_std - mean ** 2 - jnp.exp(2.0 * log_std))
    return jnp.mean((recon - action) ** 2, -1) + state.config.beta * jnp.mean(kl, -1)


def vae_loss(vae_params, state: SPOTState, batch: Transition, key: jax.Array):
    loss = neg_elbo(vae_params, state, batch.obs, batch.action, key).mean()
    return loss, {"vae_loss": loss}


def actor_loss(actor_params, state: SPOTState, batch: Transition, key: jax.Array,
               lmbda: jax.Array):
    """-mean Q_1 / mean |Q_1| (constant) + lambda * mean -ELBO of (s, pi(s)) under the VAE."""
    action = policy(actor_params, state, batch.obs)
    q = td3_bc.critics(state.critic, state, batch.obs, action)[0]
    scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
    support = neg_elbo(state.vae, state, batch.obs, action, key).mean()
    loss = -scale * q.mean() + lmbda * support
    return loss, {"actor_loss": loss, "support_loss": support, "lmbda": lmbda,
                  "q_policy": q.mean()}


def _nan_like(shapes: dict) -> dict:
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)


def _step(state: SPOTState, batch: Transition, key: jax.Array, lmbda: jax.Array,
          fit_vae: jax.Array) -> tuple[SPOTState, dict]:
    """A VAE step while `fit_vae`, else a TD3 step with the support constraint."""
    k_vae, k_td3, k_elbo = jax.random.split(key, 3)

    def vae_phase(s):
        grads, info = jax.grad(vae_loss, has_aux=True)(s.vae, s, batch, k_vae)
        updates, vae_opt = optax.adam(s.config.vae_lr).update(grads, s.vae_opt, s.vae)
        return s.replace(vae=optax.apply_updates(s.vae, updates), vae_opt=vae_opt,
                         steps=s.steps + 1), info

    def rl_phase(s):
        def a_loss(p, st, b):
            return actor_loss(p, st, b, k_elbo, lmbda)
        return td3_bc.td3_update(s, batch, k_td3, td3_bc.critic_loss, a_loss)

    vae_shapes = jax.eval_shape(vae_phase, state)[1]
    rl_shapes = jax.eval_shape(rl_phase, state)[1]

    def padded(phase, other):
        def run(s):
            s, info = phase(s)
            return s, {**_nan_like(other), **info}
        return run

    return jax.lax.cond(fit_vae, padded(vae_phase, rl_shapes), padded(rl_phase, vae_shapes),
                        state)


def update(state: SPOTState, batch: Transition, key: jax.Array) -> tuple[SPOTState, dict]:
    """Offline: the VAE for the first vae_steps updates, then TD3 + lambda * support term."""
    lmbda = jnp.asarray(state.config.lmbda, jnp.float32)
    return _step(state, batch, key, lmbda, state.steps < state.config.vae_steps)


def online_lambda(config: Config, online_steps: jax.Array) -> jax.Array:
    if not config.lambda_cool:
        return jnp.asarray(config.lmbda, jnp.float32)
    frac = 1.0 - online_steps.astype(jnp.float32) / config.lambda_cool_steps
    return config.lmbda * jnp.maximum(config.lambda_end, frac)


def online_update(state: SPOTState, batch: Transition, key: jax.Array) -> tuple[SPOTState, dict]:
    """Fine-tuning: the TD3 step with the cooled lambda; the VAE is frozen."""
    lmbda = online_lambda(state.config, state.online_steps)
    state, info = _step(state, batch, key, lmbda, jnp.asarray(False))
    return state.replace(online_steps=state.online_steps + 1), info
