"""RIQL (baselines/riql.py): its three losses against numpy written from the paper's and the
authors' equations, the update's order (everything from the V before its step), and the
contract (`offbench check`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offbench.algorithms import EnvSpec, Transition
from offbench_baselines import riql

SPEC = EnvSpec(observation_size=5, action_size=2)
CONFIG = riql.Config(hidden=(16, 16), batch_size=8, num_critics=5, quantile=0.25,
                     huber_sigma=0.7, target_min=-1.0, target_max=1.5)


def batch(seed=0, n=8) -> Transition:
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return Transition(obs=f(n, 5), action=jnp.tanh(f(n, 2)), reward=f(n) * 3,
                      next_obs=f(n, 5), terminal=jnp.asarray(rng.random(n) < 0.3, jnp.float32))


def np_quantile_linear(q: np.ndarray, alpha: float) -> np.ndarray:
    """torch.quantile's rule by hand: position alpha * (N - 1) between the sorted values."""
    s = np.sort(q, axis=0)
    pos = alpha * (len(s) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def np_huber(d: np.ndarray, sigma: float) -> np.ndarray:
    delta = 1 / sigma ** 2
    return np.where(np.abs(d) < delta, 0.5 * d ** 2 / delta, np.abs(d) - 0.5 * delta)


@pytest.fixture(scope="module")
def state():
    s = riql.init(jax.random.PRNGKey(0), SPEC, CONFIG)
    # targets differ from the critics, as after some updates
    return s.replace(target_critic=riql.critic_net(CONFIG).init(
        jax.random.PRNGKey(5), jnp.zeros((1, 5)), jnp.zeros((1, 2))))


def test_value_loss_is_the_expectile_of_the_quantile_target(state):
    b = batch()
    q = np.asarray(riql.critic_net(CONFIG).apply(state.target_critic, b.obs, b.action),
                   np.float64)
    assert q.shape == (5, 8)
    target = np_quantile_linear(q, 0.25)
    v = np.asarray(riql.value_fn(state.value, CONFIG, b.obs), np.float64)
    u = target - v
    expected = np.mean(np.where(u > 0, 0.7, 0.3) * u ** 2)
    loss, info = riql.value_loss(state.value, state, b)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(info["adv"]), u, rtol=1e-5, atol=1e-6)
    # the quantile's ends are the ensemble's min and max
    for alpha, pick in ((0.0, q.min(0)), (1.0, q.max(0))):
        s = state.replace(config=dataclasses.replace(CONFIG, quantile=alpha))
        np.testing.assert_allclose(np.asarray(riql.quantile_target(s, b)), pick, rtol=1e-5)


def test_critic_loss_is_the_huber_loss_to_the_clipped_target(state):
    b = batch(1)
    next_v = jnp.asarray(np.linspace(-3, 3, 8), jnp.float32)
    y = np.clip(np.asarray(b.reward) + 0.99 * (1 - np.asarray(b.terminal)) * np.asarray(next_v),
                -1.0, 1.5)
    q = np.asarray(riql.critic_net(CONFIG).apply(state.critic, b.obs, b.action), np.float64)
    expected = np_huber(y[None] - q, 0.7).mean()
    loss, _ = riql.critic_loss(state.critic, state, b, next_v)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert (y == -1.0).any() or (y == 1.5).any()  # the clip is exercised


def test_actor_loss_is_advantage_weighted_squared_error(state):
    b = batch(2)
    adv = jnp.asarray(np.linspace(-1, 2, 8), jnp.float32)
    pi = np.tanh(np.asarray(riql.actor_net(CONFIG, SPEC).apply(state.actor, b.obs), np.float64))
    weights = np.minimum(np.exp(3.0 * np.asarray(adv, np.float64)), 100.0)
    expected = np.mean(weights * ((pi - np.asarray(b.action)) ** 2).sum(-1))
    loss, _ = riql.actor_loss(state.actor, state, b, adv)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_update_uses_the_value_from_before_its_step(state):
    """The Q step's target reads V(s') before the V step (the authors' order): the new critic
    equals one Adam step on critic_loss with the old V."""
    import optax

    b = batch(3)
    new, metrics = riql.update(state, b, jax.random.PRNGKey(1))
    next_v = riql.value_fn(state.value, CONFIG, b.next_obs)
    grads, _ = jax.grad(riql.critic_loss, has_aux=True)(state.critic, state, b, next_v)
    _, critic_tx, _ = riql.optimizers(CONFIG)
    updates, _ = critic_tx.update(grads, state.critic_opt, state.critic)
    expected = optax.apply_updates(state.critic, updates)
    for a, e in zip(jax.tree.leaves(new.critic), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-7)
    assert int(new.steps) == 1 and all(np.isfinite(float(v)) for v in metrics.values())


def test_riql_keeps_the_contract():
    from offbench.harness.check import check

    assert check("riql", ["hidden=16,16", "batch_size=32"], updates=3, log=lambda *_: None)
