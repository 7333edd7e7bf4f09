"""BC and top-%BC against an independent float64 numpy reference: the loss is the mean squared
error between the tanh MLP policy's action and the dataset's (CORL's any_percent_bc); top-%BC is
the same loss on the kept episodes (the episode filter is tested in test_offline.py)."""

import jax
import numpy as np
import pytest

from offbench.algorithms import EnvSpec
from offbench_baselines import bc

from np_reference import as_np, fixed_batch, get, np_mlp, perturbed

SPEC = EnvSpec(observation_size=5, action_size=3)
KERNELS = [(("params", "Dense_0", "kernel"), (2, 7)), (("params", "Dense_2", "kernel"), (5, 1)),
           (("params", "Dense_1", "bias"), (3,))]


def make_state(top_fraction=1.0):
    return bc.init(jax.random.PRNGKey(1), SPEC, bc.Config(hidden=(16, 16),
                                                          top_fraction=top_fraction))


def np_loss(params, batch):
    action = np.tanh(np_mlp(params["params"], batch.obs))
    return np.mean((action - batch.action) ** 2)


@pytest.mark.parametrize("top_fraction", [1.0, 0.1])
def test_loss_matches_reference(top_fraction):
    state, batch = make_state(top_fraction), fixed_batch()
    loss, info = bc.loss(state.actor, state, batch)
    expected = np_loss(state.actor, as_np(batch))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["bc_loss"]), expected, rtol=1e-5)


@pytest.mark.parametrize("path,index", KERNELS)
def test_gradient_matches_finite_differences_of_the_reference(path, index):
    state, batch = make_state(), fixed_batch()
    grads = jax.grad(lambda p: bc.loss(p, state, batch)[0])(state.actor)
    b, eps = as_np(batch), 1e-5
    numeric = (np_loss(perturbed(state.actor, path, index, eps), b)
               - np_loss(perturbed(state.actor, path, index, -eps), b)) / (2 * eps)
    assert abs(numeric) > 1e-6  # a weight the loss depends on
    np.testing.assert_allclose(float(get(grads, path)[index]), numeric, rtol=1e-5)


def test_update_is_one_adam_step_of_the_loss_gradient():
    """With Adam's bias correction the first step moves every weight by lr * g / (|g| + eps)."""
    state, batch = make_state(), fixed_batch()
    new, metrics = jax.jit(bc.update)(state, batch, jax.random.PRNGKey(0))
    grads = jax.grad(lambda p: bc.loss(p, state, batch)[0])(state.actor)
    lr = state.config.lr
    for p0, p1, g in zip(jax.tree.leaves(state.actor), jax.tree.leaves(new.actor),
                         jax.tree.leaves(grads), strict=True):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(np.asarray(p1) - np.asarray(p0),
                                   -lr * g / (np.abs(g) + 1e-8), rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(float(metrics["bc_loss"]), np_loss(state.actor, as_np(batch)),
                               rtol=1e-5)
    assert int(new.steps) == 1


def test_top_fraction_keeps_int_of_the_whole_episodes_only():
    """CORL's keep_best_trajectories: int(fraction x whole episodes), ranked by return; an
    episode cut by the end of the data is never kept. Five whole episodes (four terminate, one
    reaches max_episode_steps=3) with returns 2, 5, 0, 3, 4 and a cut one with return 9: 30%
    keeps int(1.5) = 1 episode, the one with return 5 (round(0.3 x 6) = 2 would keep the cut
    episode and the return-5 one)."""
    reward = np.array([1, 1, 5, 0, 0, 0, 3, 2, 2, 9], np.float32)
    terminal = np.array([0, 1, 1, 0, 0, 0, 1, 0, 1, 0], np.float32)
    lengths = np.array([2, 1, 3, 1, 2, 1])  # the 3-step one ends by the time limit
    arrays = {"reward": reward, "terminal": terminal, "obs": np.arange(10.0)[:, None]}
    config = bc.Config(top_fraction=0.3, max_episode_steps=3)
    kept, kept_lengths = bc.prepare_dataset(arrays, lengths, config)
    np.testing.assert_array_equal(kept["obs"][:, 0], [2])
    np.testing.assert_array_equal(kept_lengths, [1])
    # 50%: int(2.5) = 2 episodes, returns 5 and 4 (round(0.5 x 6) = 3 with the cut one)
    kept, kept_lengths = bc.prepare_dataset(arrays, lengths, bc.Config(top_fraction=0.5,
                                                                       max_episode_steps=3))
    np.testing.assert_array_equal(kept["obs"][:, 0], [2, 7, 8])
    np.testing.assert_array_equal(kept_lengths, [1, 2])
