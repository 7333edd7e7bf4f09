"""Networks shared by all algorithms (Flax linen): MLPs, tanh-Gaussian actors, critic ensembles.

A critic ensemble is ONE network whose parameters carry a leading ensemble axis (`nn.vmap`), so
N critics cost one batched matmul per layer rather than a Python loop over N modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return nn.Dense(self.out)(x)


class TanhGaussianActor(nn.Module):
    """Outputs the mean and log-std of a Gaussian whose samples are squashed by tanh."""

    hidden: Sequence[int]
    action_size: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden, 2 * self.action_size, self.layer_norm)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        # Smooth squashing of log-std into [LOG_STD_MIN, LOG_STD_MAX] (as in CleanRL/RLPD).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1)
        return mean, log_std


class Critic(nn.Module):
    hidden: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden, 1, self.layer_norm)(x)[..., 0]


class CriticEnsemble(nn.Module):
    """`size` independent critics; output shape (size, *batch)."""

    hidden: Sequence[int]
    size: int = 2
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.size)
        return ensemble(self.hidden, self.layer_norm)(obs, action)


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """Reparameterized sample in (-1, 1) and its log-probability (tanh change of variables)."""
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + jnp.exp(log_std) * noise
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    gaussian = -0.5 * (((pre_tanh - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std
                       + jnp.log(2 * jnp.pi))
    # log(1 - tanh(u)^2), computed stably as 2 * (log 2 - u - softplus(-2u))
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)
