"""Independent float64 numpy references shared by the algorithms' loss-parity tests: the MLPs,
tanh-Gaussian actors and critic ensembles of offbench/networks.py written out by hand, and a
fixed random batch."""

import jax
import jax.numpy as jnp
import numpy as np

from offbench.algorithms import Transition


def np_layer_norm(params, x, eps=1e-6):
    """(x - mean) / sqrt(var + eps) * scale + bias over the features (Flax's LayerNorm)."""
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return x * np.asarray(params["scale"], np.float64) + np.asarray(params["bias"], np.float64)


def np_mlp(params, x):
    """Dense layers with ReLU between them, and a LayerNorm before each ReLU where the
    parameters have one (`layer_norm=True` networks)."""
    layers = sorted((n for n in params if n.startswith("Dense_")), key=lambda n: int(n[6:]))
    for i, name in enumerate(layers):
        x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"])
        if i < len(layers) - 1:
            if f"LayerNorm_{i}" in params:
                x = np_layer_norm(params[f"LayerNorm_{i}"], x)
            x = np.maximum(x, 0.0)
    return x


def np_actor(params, obs):
    out = np_mlp(params["params"]["MLP_0"], obs)
    mean, raw = np.split(out, 2, axis=-1)
    return mean, -5.0 + 3.5 * (np.tanh(raw) + 1.0)


def np_critics(params, obs, action):
    p = params["params"]["VmapCritic_0"]["MLP_0"]
    n = p["Dense_0"]["kernel"].shape[0]
    x = np.concatenate([obs, action], axis=-1)
    return np.stack([np_mlp(jax.tree.map(lambda a, i=i: np.asarray(a)[i], p), x)[..., 0]
                     for i in range(n)])


def np_sample(mean, log_std, noise):
    u = mean + np.exp(log_std) * noise
    a = np.tanh(u)
    # Gaussian log-density minus the tanh Jacobian, written the textbook way
    logp = np.sum(-0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
                  - np.log(1.0 - a ** 2), axis=-1)
    return a, logp


def fixed_batch(n=64, seed=0, obs_size=5, action_size=3):
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    terminal = jnp.asarray(rng.random(n) < 0.2, jnp.float32)
    return Transition(obs=f(n, obs_size), action=jnp.tanh(f(n, action_size)), reward=f(n),
                      next_obs=f(n, obs_size), terminal=terminal)


def as_np(batch):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), batch)


def get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def perturbed(params, path, index, delta):
    """A float64 copy of `params` with one entry moved by `delta` (finite differences)."""
    params = jax.tree.map(lambda x: np.array(x, np.float64), params)
    get(params, path)[index] += delta
    return params


def np_critics_shared_layer_norm(params, obs, action, eps=1e-5):
    """np_critics for a critic ensemble whose members share ONE LayerNorm per hidden layer
    (`CriticEnsemble(layer_norm="shared")`, CORL's LB-SAC): member i's own Dense layers, then
    the shared scale and bias params["params"]["LayerNorm_k"] after hidden layer k, with
    PyTorch's epsilon."""
    top = params["params"]
    p = top["VmapCritic_0"]["MLP_0"]
    layers = sorted((n for n in p if n.startswith("Dense_")), key=lambda n: int(n[6:]))
    x = np.concatenate([obs, action], axis=-1)
    out = []
    for i in range(p[layers[0]]["kernel"].shape[0]):
        h = x
        for k, name in enumerate(layers):
            h = (h @ np.asarray(p[name]["kernel"][i], np.float64)
                 + np.asarray(p[name]["bias"][i], np.float64))
            if k < len(layers) - 1:
                h = np.maximum(np_layer_norm(top[f"LayerNorm_{k}"], h, eps), 0.0)
        out.append(h[..., 0])
    return np.stack(out)
