"""The probabilistic dynamics ensemble of MBPO (Janner et al. 2019) and MOPO (Yu et al. 2020).

E = 7 Gaussian MLPs (4 hidden layers of 200, swish) map a standardized (s, a) to the mean and
log-variance of the standardized target y = (s' - s, r). The log-variance is soft-clamped into
learned bounds, as in MBPO (Chua et al.'s PETS):

    logvar = max_lv - softplus(max_lv - raw),   logvar = min_lv + softplus(logvar - min_lv)

with max_lv (init 0.5) and min_lv (init -10) parameters shared by the members. The loss of one
minibatch per member (Gaussian negative log-likelihood up to the factor 1/2 and constants):

    L = sum_e mean_{b,d} [(mu_e - y)^2 exp(-logvar_e) + logvar_e]
        + sum_layers wd_l * 0.5 ||W_l||^2 + 0.01 (sum max_lv - sum min_lv)

Training (`fit`, one compiled `lax.while_loop`, vmappable over seeds): a holdout of
min(20%, 1000) transitions; every epoch ceil(train / 256) Adam steps (lr 1e-3), then each
member's holdout MSE (of its mean, standardized units); a member whose holdout MSE improved by
more than 1% (relative) since its best has its weights saved; training stops after 5 epochs in
which no member improved (or at `max_epochs`). The saved weights are kept and the `elites` = 5
members of lowest holdout MSE are the ones rollouts sample from. `holdout_mse` (reported in the
algorithms' metrics) is the elites' mean holdout MSE in the data's own units, the number
OfflineRL-Kit logs as `dynamics_holdout_loss`.

Sources: OfflineRL-Kit (yihaosun1124/OfflineRL-Kit: offlinerlkit/modules/dynamics_module.py,
nets/ensemble_linear.py, dynamics/ensemble_dynamics.py, run_example/run_mopo.py), which follows
MOPO's and MBPO's TensorFlow code: 7 members, 5 elites, 4x200 swish, weight decays
(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4) by layer, Adam 1e-3, batch 256, holdout min(20%, 1000),
5 epochs without improvement, 1% improvement threshold, bound coefficient 0.01, kernels
truncated normal with std 1 / (2 sqrt(fan_in)), biases 0. Unifloral's JAX version
(EmptyJackson/unifloral algorithms/dynamics.py) has the same network and clamp.

Declared differences from OfflineRL-Kit:
- targets are standardized as well as inputs (OfflineRL-Kit and MBPO: inputs only), so every
  output dimension weighs the same in the loss, the holdout MSE that picks elites and stops
  training, and the log-variance bounds; predictions are mapped back to the data's units
  (mean * std + mean, std * std), so rollouts, penalties and `holdout_mse` are in raw units;
- each step draws every member's minibatch uniformly with replacement from the training rows
  (OfflineRL-Kit: one bootstrap resample per member, shuffled every epoch, walked in order);
  an epoch is ceil(train / batch) such steps;
- the kernels' normal is truncated at +-2 standard deviations (Flax; PyTorch's trunc_normal_ at
  +-2 absolute, which at std 1 / (2 sqrt(fan_in)) < 0.25 truncates nothing);
- standard deviations below 1e-12 are set to 1 (as OfflineRL-Kit's scaler) for inputs and
  targets alike; `max_epochs` is None (no limit) by default as in OfflineRL-Kit.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

MAX_LOGVAR_INIT, MIN_LOGVAR_INIT = 0.5, -10.0
STD_FLOOR = 1e-12  # a dimension with a smaller std is left unscaled (OfflineRL-Kit's scaler)
NO_LOSS = 1e10  # a member's best holdout loss before its first epoch (OfflineRL-Kit's)


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    members: int = 7
    elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # per layer
    lr: float = 1e-3
    batch_size: int = 256
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    max_epochs_since_update: int = 5
    max_epochs: int | None = None  # None: until early stopping
    logvar_loss_coef: float = 0.01
    min_improvement: float = 0.01  # relative holdout improvement that saves a member

    def validate(self) -> None:
        if not 1 <= self.elites <= self.members:
            raise ValueError(f"elites must be in [1, members={self.members}], got {self.elites}")
        if len(self.weight_decay) != len(self.hidden) + 1:
            raise ValueError(f"weight_decay needs one value per layer ({len(self.hidden) + 1}), "
                             f"got {self.weight_decay}")


class EnsembleDense(nn.Module):
    """E independent dense layers: (E, B, in) -> (E, B, features)."""

    members: int
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        init = nn.initializers.truncated_normal(stddev=1.0 / (2.0 * math.sqrt(fan_in)))
        kernel = self.param("kernel", init, (self.members, fan_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.members, 1, self.features))
        return jnp.einsum("ebi,eio->ebo", x, kernel) + bias


def soft_clamp(x: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """x squashed below `high` and above `low` with softplus (gradients flow to the bounds)."""
    x = high - jax.nn.softplus(high - x)
    return low + jax.nn.softplus(x - low)


class GaussianEnsemble(nn.Module):
    """(B, in) or (E, B, in) standardized inputs -> mean, log-variance, each (E, B, out)."""

    members: int
    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim == 2:
            x = jnp.broadcast_to(x, (self.members, *x.shape))
        for width in self.hidden:
            x = nn.swish(EnsembleDense(self.members, width)(x))
        mean, logvar = jnp.split(EnsembleDense(self.members, 2 * self.out)(x), 2, axis=-1)
        max_lv = self.param("max_logvar", nn.initializers.constant(MAX_LOGVAR_INIT), (self.out,))
        min_lv = self.param("min_logvar", nn.initializers.constant(MIN_LOGVAR_INIT), (self.out,))
        return mean, soft_clamp(logvar, min_lv, max_lv)


class ModelState(struct.PyTreeNode):
    """A trained ensemble with its standardization and elites."""

    params: dict
    in_mean: jax.Array
    in_std: jax.Array
    out_mean: jax.Array
    out_std: jax.Array
    elites: jax.Array  # (elites,) member indices, best first
    holdout_mse: jax.Array  # the elites' mean holdout MSE, raw units
    holdout_losses: jax.Array  # (members,) best holdout MSE, standardized units
    epochs: jax.Array  # epochs trained
    config: EnsembleConfig = struct.field(pytree_node=False)


def network(config: EnsembleConfig, obs_size: int) -> GaussianEnsemble:
    return GaussianEnsemble(config.members, tuple(config.hidden), obs_size + 1)


def nll_loss(params: dict, net: GaussianEnsemble, inputs: jax.Array, targets: jax.Array,
             config: EnsembleConfig) -> tuple[jax.Array, dict]:
    """The training loss (module docstring); inputs (E, B, in), targets (E, B, out), both
    standardized."""
    mean, logvar = net.apply(params, inputs)
    nll = jnp.sum(jnp.mean((mean - targets) ** 2 * jnp.exp(-logvar) + logvar, axis=(1, 2)))
    p = params["params"]
    layers = [p[f"EnsembleDense_{i}"]["kernel"] for i in range(len(config.hidden) + 1)]
    decay = sum(wd * 0.5 * jnp.sum(w ** 2)
                for wd, w in zip(config.weight_decay, layers, strict=True))
    bounds = config.logvar_loss_coef * (p["max_logvar"].sum() - p["min_logvar"].sum())
    return nll + decay + bounds, {"nll": nll, "decay": decay, "bounds": bounds}


def _moments(x: jax.Array, weight: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    mean = (x * weight[:, None]).sum(0) / count
    std = jnp.sqrt((((x - mean) ** 2) * weight[:, None]).sum(0) / count)
    return mean, jnp.where(std < STD_FLOOR, 1.0, std)


def fit(key: jax.Array, obs: jax.Array, action: jax.Array, reward: jax.Array,
        next_obs: jax.Array, config: EnsembleConfig) -> ModelState:
    """Train the ensemble on transitions (module docstring): pure, one `lax.while_loop`.
    Rows are gathered by index from the arrays given, so under `vmap` over seeds the dataset
    is not copied per seed."""
    config.validate()
    n, obs_size = obs.shape
    holdout = min(int(n * config.holdout_ratio), config.max_holdout)
    train_n = n - holdout
    if holdout < 1 or train_n < 1:
        raise ValueError(f"{n} transitions are too few for a holdout split")
    inputs = jnp.concatenate([obs, action], axis=-1)
    targets = jnp.concatenate([next_obs - obs, reward[:, None]], axis=-1)
    k_split, k_init, k_train = jax.random.split(key, 3)
    perm = jax.random.permutation(k_split, n)
    train_idx, hold_idx = perm[:train_n], perm[train_n:]
    weight = jnp.zeros(n).at[train_idx].set(1.0)
    in_mean, in_std = _moments(inputs, weight, train_n)
    out_mean, out_std = _moments(targets, weight, train_n)
    hold_x = (inputs[hold_idx] - in_mean) / in_std
    hold_y = (targets[hold_idx] - out_mean) / out_std

    net = network(config, obs_size)
    params = net.init(k_init, hold_x[:1])
    tx = optax.adam(config.lr)
    steps = math.ceil(train_n / config.batch_size)

    def train_step(carry, k):
        params, opt = carry
        rows = train_idx[jax.random.randint(k, (config.members, config.batch_size), 0, train_n)]
        x, y = (inputs[rows] - in_mean) / in_std, (targets[rows] - out_mean) / out_std
        grads, _ = jax.grad(nll_loss, has_aux=True)(params, net, x, y, config)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), None

    def holdout_mse(params):
        return ((net.apply(params, hold_x)[0] - hold_y) ** 2).mean(axis=(1, 2))

    def epoch(c):
        key, k = jax.random.split(c["key"])
        (params, opt), _ = jax.lax.scan(train_step, (c["params"], c["opt"]),
                                        jax.random.split(k, steps))
        new = holdout_mse(params)
        improved = (c["best"] - new) / c["best"] > config.min_improvement
        saved = jax.tree.map(  # per member: the new weights where it improved
            lambda new_w, old_w: jnp.where(
                improved.reshape(-1, *[1] * (new_w.ndim - 1)), new_w, old_w)
            if new_w.shape[:1] == (config.members,) and new_w.ndim == 3 else new_w,
            params, c["saved"])
        return {"key": key, "params": params, "opt": opt, "saved": saved,
                "best": jnp.where(improved, new, c["best"]), "epoch": c["epoch"] + 1,
                "since": jnp.where(improved.any(), 0, c["since"] + 1)}

    def keep_going(c):
        going = c["since"] < config.max_epochs_since_update
        if config.max_epochs is not None:
            going &= c["epoch"] < config.max_epochs
        return going

    start = {"key": k_train, "params": params, "opt": tx.init(params), "saved": params,
             "best": jnp.full((config.members,), NO_LOSS, jnp.float32),
             "epoch": jnp.zeros((), jnp.int32), "since": jnp.zeros((), jnp.int32)}
    end = jax.lax.while_loop(keep_going, epoch, start)
    # the saved members' layers, the last bounds (OfflineRL-Kit's load_save restores layers)
    p = end["params"]["params"]
    final = {"params": {**end["saved"]["params"], "max_logvar": p["max_logvar"],
                        "min_logvar": p["min_logvar"]}}
    elites = jnp.argsort(end["best"])[:config.elites].astype(jnp.int32)
    raw_mse = (((net.apply(final, hold_x)[0] - hold_y) * out_std) ** 2).mean(axis=(1, 2))
    return ModelState(params=final, in_mean=in_mean, in_std=in_std, out_mean=out_mean,
                      out_std=out_std, elites=elites, holdout_mse=raw_mse[elites].mean(),
                      holdout_losses=end["best"], epochs=end["epoch"], config=config)


def predict(model: ModelState, obs: jax.Array, action: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
    """Every member's mean and std of (s' - s, r) in raw units, each (E, B, obs_size + 1)."""
    net = network(model.config, obs.shape[-1])
    x = (jnp.concatenate([obs, action], axis=-1) - model.in_mean) / model.in_std
    mean, logvar = net.apply(model.params, x)
    return mean * model.out_std + model.out_mean, jnp.exp(0.5 * logvar) * model.out_std


def sample_step(model: ModelState, obs: jax.Array, action: jax.Array, key: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One model step per row from a random elite: (next_obs, reward, means, stds), the means
    and stds (E, B, obs_size + 1) of every member (for penalties)."""
    mean, std = predict(model, obs, action)
    k_member, k_noise = jax.random.split(key)
    rows = jnp.arange(obs.shape[0])
    member = model.elites[jax.random.randint(k_member, rows.shape, 0, model.elites.shape[0])]
    m, s = mean[member, rows], std[member, rows]
    sample = m + s * jax.random.normal(k_noise, m.shape, m.dtype)
    return obs + sample[:, :-1], sample[:, -1], mean, std


def max_std_norm(std: jax.Array) -> jax.Array:
    """MOPO's uncertainty u(s, a) = max over members of ||std_e(s, a)||_2, over the
    next-observation and reward outputs together (OfflineRL-Kit's "aleatoric" mode): (B,)."""
    return jnp.linalg.norm(std, axis=-1).max(axis=0)
