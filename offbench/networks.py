"""Networks shared by all algorithms (Flax linen): MLPs, tanh-Gaussian actors, critic ensembles.

A critic ensemble is ONE network whose parameters carry a leading ensemble axis (`nn.vmap`), so
N critics cost one batched matmul per layer rather than a Python loop over N modules.

LayerNorm (`layer_norm=True`) is Flax's, epsilon 1e-6, with its own scale and bias in every
network, and so in every member of an ensemble. `CriticEnsemble(layer_norm="shared")` is the
LayerNorm of PyTorch ensembles built from batched linear layers (CORL's LB-SAC): one
`torch.nn.LayerNorm(width)` applied to the stacked (N, batch, width) activations, so each
member's activations are normalized on their own but ONE scale and bias serve all N members,
and PyTorch's epsilon 1e-5 is used.

The tanh-Gaussian log-density uses the exact log-Jacobian log(1 - tanh(u)^2), computed from u
(not from tanh(u)) so it stays finite and accurate where tanh saturates. Some references add
1e-6 inside the logarithm instead (CORL's SAC-N, EDAC, LB-SAC); the algorithms whose reference
does so declare it.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
FLAX_LAYER_NORM_EPS = 1e-6  # nn.LayerNorm's default
TORCH_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default
SHARED = "shared"  # CriticEnsemble(layer_norm=SHARED): one LayerNorm for all members

# A LayerNorm's affine parameters given to an MLP from outside: (scale, bias) per hidden layer
Norms = tuple[tuple[jax.Array, jax.Array], ...]


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    layer_norm: bool = False
    layer_norm_eps: float = FLAX_LAYER_NORM_EPS

    @nn.compact
    def __call__(self, x: jax.Array, norms: Norms | None = None) -> jax.Array:
        """`norms`: the LayerNorms' (scale, bias) per hidden layer, owned by the caller (shared
        by an ensemble's members); None: each LayerNorm has its own parameters."""
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width)(x)
            if self.layer_norm:
                own = norms is None
                x = nn.LayerNorm(epsilon=self.layer_norm_eps, use_scale=own, use_bias=own)(x)
                if not own:
                    scale, bias = norms[i]
                    x = x * scale + bias
            x = nn.relu(x)
        return nn.Dense(self.out)(x)


class LayerNormParams(nn.Module):
    """The affine parameters of a LayerNorm over `width` features, held apart from the
    normalization (so that several networks can share them)."""

    width: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        return (self.param("scale", nn.initializers.ones, (self.width,)),
                self.param("bias", nn.initializers.zeros, (self.width,)))


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
    layer_norm_eps: float = FLAX_LAYER_NORM_EPS

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, norms: Norms | None = None
                 ) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden, 1, self.layer_norm, self.layer_norm_eps)(x, norms)[..., 0]


class CriticEnsemble(nn.Module):
    """`size` independent critics; output shape (size, *batch).

    layer_norm: False; True (a LayerNorm per member, Flax's); or SHARED (one LayerNorm's scale
    and bias for all members, PyTorch's epsilon; its parameters are `LayerNorm_i` beside
    `VmapCritic_0`). member_actions: `action` has a leading ensemble axis and member i sees
    only action[i] (EDAC's per-member action gradients in one backward pass)."""

    hidden: Sequence[int]
    size: int = 2
    layer_norm: bool | str = False
    member_actions: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        if self.layer_norm not in (False, True, SHARED):
            raise ValueError(f"layer_norm must be False, True or '{SHARED}', "
                             f"got {self.layer_norm!r}")
        shared = self.layer_norm == SHARED
        norms = (tuple(LayerNormParams(w, name=f"LayerNorm_{i}")()
                       for i, w in enumerate(self.hidden)) if shared else None)
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=(None, 0 if self.member_actions else None, None),
                           out_axes=0, axis_size=self.size)
        eps = TORCH_LAYER_NORM_EPS if shared else FLAX_LAYER_NORM_EPS
        return ensemble(self.hidden, bool(self.layer_norm), eps)(obs, action, norms)


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
