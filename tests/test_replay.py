import jax
import jax.numpy as jnp
import numpy as np

from offbench.loops import replay


def test_wraps_around_and_overwrites_the_oldest():
    buf = replay.create({"x": jnp.zeros(2)}, capacity=5)
    items = lambda lo, hi: {"x": jnp.stack([jnp.arange(lo, hi)] * 2, axis=1)}  # noqa: E731
    buf = replay.add(buf, items(0, 3))
    assert int(buf.position) == 3 and int(buf.size) == 3
    buf = replay.add(buf, items(3, 7))  # 7 items into 5 slots: 0 and 1 are overwritten
    assert int(buf.position) == 2 and int(buf.size) == 5
    np.testing.assert_array_equal(np.asarray(buf.data["x"][:, 0]), [5, 6, 2, 3, 4])
    buf = replay.add(buf, items(7, 12))  # exactly one full lap
    np.testing.assert_array_equal(np.asarray(buf.data["x"][:, 0]), [10, 11, 7, 8, 9])
    assert int(buf.position) == 2


def test_samples_only_written_items():
    buf = replay.create(jnp.zeros(()), capacity=100)
    buf = replay.add(buf, jnp.arange(1.0, 8.0))  # 7 of 100 slots written
    drawn = np.asarray(replay.sample(buf, jax.random.PRNGKey(0), 5000))
    assert set(drawn.tolist()) == set(range(1, 8))  # all of them, and nothing else
