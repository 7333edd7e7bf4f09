"""An on-device circular replay buffer, as a plain pytree.

Our own rather than flashbax's: it is ~40 lines, a plain pytree that Orbax checkpoints and
`vmap` batches over seeds without special cases, and its wrap-around is tested directly
(tests/test_replay.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


class ReplayBuffer(struct.PyTreeNode):
    data: object  # pytree of arrays with a leading capacity axis
    position: jax.Array  # next slot to write
    size: jax.Array  # number of valid items (<= capacity)

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def create(example: object, capacity: int) -> ReplayBuffer:
    """An empty buffer for items shaped like `example` (one item, no batch axis)."""
    if capacity <= 0:
        raise ValueError(f"replay capacity must be positive, got {capacity}")
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype),
                        example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayBuffer(data=data, position=zero, size=zero)


def add(buffer: ReplayBuffer, items: object) -> ReplayBuffer:
    """Append a batch of items (leading axis n <= capacity), overwriting the oldest."""
    n = jax.tree.leaves(items)[0].shape[0]
    cap = buffer.capacity
    if n > cap:
        raise ValueError(f"cannot add {n} items to a replay buffer of capacity {cap}")
    slots = (buffer.position + jnp.arange(n)) % cap
    data = jax.tree.map(lambda d, x: d.at[slots].set(x), buffer.data, items)
    return ReplayBuffer(data=data, position=(buffer.position + n) % cap,
                        size=jnp.minimum(buffer.size + n, cap))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> object:
    """Uniform sample with replacement from the valid items."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[idx], buffer.data)
