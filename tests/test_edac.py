"""EDAC against an independent float64 numpy reference written from the paper's equations: each
critic's action gradient backpropagated by hand through its ReLU layers, the ensemble-similarity
(ES) term summed over ordered pairs i != j, its parameter gradient by central differences on the
reference, and constructed ensembles whose ES is known by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from offbench.algorithms import EnvSpec, apply_overrides
from offbench_baselines import edac

from np_reference import as_np, fixed_batch, np_actor, np_critics, np_sample

SPEC = EnvSpec(observation_size=5, action_size=3)
GAMMA = 0.99
N = 5
ETA = 2.5  # not 1, so a wrong weighting of the ES term shows
K_CRITIC = jax.random.PRNGKey(3)


@functools.cache
def make_state():
    cfg = edac.Config(hidden=(16, 16), num_critics=N, init_temperature=0.3, eta=ETA,
                      edac_init=False)  # Flax's init: critics that disagree by O(1)
    state = edac.init(jax.random.PRNGKey(1), SPEC, cfg)
    other = edac.init(jax.random.PRNGKey(2), SPEC, cfg)  # a distinct target critic
    return state.replace(sac=state.sac.replace(target_critic=other.sac.critic))


def to64(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


@functools.cache
def x64_implementation():
    """One float64 compile of: action gradients, ES and its gradient, EDAC's critic loss and
    its gradient, for the given critic parameters."""
    with jax.enable_x64(True):
        @jax.jit
        def run(critic, state, batch):
            s = state.sac
            g = edac.action_gradients(critic, s, batch.obs, batch.action)
            es, es_grads = jax.value_and_grad(edac.diversity_loss)(critic, s, batch)
            (loss, info), loss_grads = jax.value_and_grad(edac.critic_loss, has_aux=True)(
                critic, state, batch, K_CRITIC)
            return g, es, es_grads, loss, info, loss_grads
    return run


@functools.cache
def state64():
    state = make_state()
    s = state.sac
    with jax.enable_x64(True):
        return state.replace(sac=s.replace(actor=to64(s.actor), critic=to64(s.critic),
                                           target_critic=to64(s.target_critic),
                                           log_alpha=to64(s.log_alpha)))


def run64(critic):
    """The implementation in float64 at these critic parameters (numpy in, numpy out)."""
    with jax.enable_x64(True):
        out = x64_implementation()(to64(critic), state64(), to64(fixed_batch()))
        return jax.device_get(out)


# ---- the numpy reference ----------------------------------------------------------------------

def np_members(critic):
    """Per critic, its layers [(kernel, bias), ...] in float64."""
    p = critic["params"]["VmapCritic_0"]["MLP_0"]
    names = sorted(p, key=lambda name: int(name.split("_")[1]))
    n = np.shape(p[names[0]]["kernel"])[0]
    return [[(np.asarray(p[k]["kernel"][i], np.float64), np.asarray(p[k]["bias"][i], np.float64))
             for k in names] for i in range(n)]


def np_q_and_action_grad(layers, obs, action):
    """Q(s, a), dQ/da by backpropagation through the ReLU layers, and the ReLU pattern."""
    h = np.concatenate([obs, action], axis=-1)
    masks = []
    for kernel, bias in layers[:-1]:
        z = h @ kernel + bias
        masks.append(z > 0)
        h = np.where(z > 0, z, 0.0)
    kernel, bias = layers[-1]
    q = (h @ kernel + bias)[:, 0]
    d = np.broadcast_to(kernel[:, 0], h.shape)  # dQ/dh of the last hidden layer
    for (kernel, _), mask in zip(reversed(layers[:-1]), reversed(masks), strict=True):
        d = (d * mask) @ kernel.T
    return q, d[:, obs.shape[1]:], masks


def np_es(grads):
    """ES = mean over the batch of 1/(N-1) sum_{i != j} <g_i/|g_i|, g_j/|g_j|>."""
    n = len(grads)
    unit = [g / (np.linalg.norm(g, axis=-1, keepdims=True) + 1e-10) for g in grads]
    total = sum(np.sum(unit[i] * unit[j], axis=-1) for i in range(n) for j in range(n) if i != j)
    return np.mean(total) / (n - 1)


def np_losses(critic, b, target):
    """(TD loss 0.5 * sum_i mean (Q_i - y)^2, ES, ReLU patterns) at these critic parameters."""
    outs = [np_q_and_action_grad(layers, b.obs, b.action) for layers in np_members(critic)]
    td = 0.5 * sum(np.mean((q - target) ** 2) for q, _, _ in outs)
    return td, np_es([g for _, g, _ in outs]), [m for _, _, masks in outs for m in masks]


def np_target(b):
    """y = r + gamma (1 - d) (min over all N target critics - alpha log pi), with the
    implementation's standard-normal draws for a' (inputs, not computations)."""
    s = make_state().sac
    with jax.enable_x64(True):
        noise = np.asarray(jax.random.normal(jax.random.split(K_CRITIC)[0], (64, 3), jnp.float64))
    next_a, next_logp = np_sample(*np_actor(s.actor, b.next_obs), noise)
    next_q = np_critics(s.target_critic, b.next_obs, next_a)
    alpha = np.exp(np.float64(s.log_alpha))
    return b.reward + GAMMA * (1.0 - b.terminal) * (next_q.min(0) - alpha * next_logp)


def critic_np(critic):
    return jax.tree.map(lambda x: np.array(x, np.float64), critic)


# ---- tests --------------------------------------------------------------------------------------

def test_defaults():
    cfg = edac.Config()
    assert edac.MODES == ("offline", "o2o")
    assert (cfg.num_critics, cfg.eta, cfg.hidden, cfg.batch_size) == (10, 1.0, (256,) * 3, 256)
    assert (cfg.actor_lr, cfg.critic_lr, cfg.temperature_lr) == (3e-4, 3e-4, 3e-4)
    assert cfg.edac_init and not cfg.normalize_obs
    # per-dataset settings from the CLI (hopper: N=50)
    hopper = apply_overrides(cfg, ["num_critics=50", "eta=1.0"])
    assert (hopper.num_critics, hopper.eta, hopper.hidden) == (50, 1.0, (256,) * 3)
    state = make_state()
    assert (state.sac.config.num_critics, state.sac.config.num_target_critics) == (N, N)


def test_action_gradients_and_es_match_reference():
    critic = critic_np(make_state().sac.critic)
    g, es, *_ = run64(critic)
    b = as_np(fixed_batch())
    expected = [np_q_and_action_grad(layers, b.obs, b.action)[1] for layers in np_members(critic)]
    np.testing.assert_allclose(g, np.stack(expected), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(es, np_es(expected), rtol=1e-5)


def test_critic_loss_is_td_plus_half_eta_es():
    critic = critic_np(make_state().sac.critic)
    *_, loss, info, _ = run64(critic)
    b = as_np(fixed_batch())
    td, es, _ = np_losses(critic, b, np_target(b))
    np.testing.assert_allclose(loss, td + 0.5 * ETA * es, rtol=1e-5)
    np.testing.assert_allclose(info["critic_loss"], td, rtol=1e-5)
    np.testing.assert_allclose(info["diversity_loss"], es, rtol=1e-5)
    assert abs(0.5 * ETA * es) > 1e-3 * abs(td)  # the ES term is visible at this tolerance


def test_gradients_match_finite_differences():
    """d ES / d(every critic parameter) and d(EDAC critic loss) / d(every critic parameter),
    against central differences of the float64 reference."""
    critic = critic_np(make_state().sac.critic)
    _, _, es_grads, _, _, loss_grads = run64(critic)
    b = as_np(fixed_batch())
    target = np_target(b)
    _, _, base_masks = np_losses(critic, b, target)
    eps, skipped, count = 1e-6, 0, 0
    leaves = jax.tree.leaves(critic)
    fd_es = [np.zeros_like(x) for x in leaves]
    fd_loss = [np.zeros_like(x) for x in leaves]
    for leaf, es_out, loss_out in zip(leaves, fd_es, fd_loss, strict=True):
        for index in np.ndindex(leaf.shape):
            count += 1
            value = leaf[index]
            results = []
            for sign in (1, -1):
                leaf[index] = value + sign * eps
                results.append(np_losses(critic, b, target))
            leaf[index] = value
            if any(not all(np.array_equal(m, m0) for m, m0 in zip(r[2], base_masks, strict=True))
                   for r in results):  # a ReLU switched: ES jumps, no derivative to compare
                skipped += 1
                es_out[index] = loss_out[index] = np.nan
                continue
            (td_p, es_p, _), (td_m, es_m, _) = results
            es_out[index] = (es_p - es_m) / (2 * eps)
            loss_out[index] = ((td_p + 0.5 * ETA * es_p) - (td_m + 0.5 * ETA * es_m)) / (2 * eps)
    assert skipped <= 0.01 * count, (skipped, count)
    for got_tree, want in ((es_grads, fd_es), (loss_grads, fd_loss)):
        got = jax.tree.leaves(got_tree)
        scale = max(np.abs(w[np.isfinite(w)]).max() for w in want)
        for g, w in zip(got, want, strict=True):
            ok = np.isfinite(w)
            np.testing.assert_allclose(g[ok], w[ok], rtol=1e-5, atol=1e-7 * scale)


def with_members(critic, build):
    """Critic parameters whose member i is build(i, member 0's layer params, layer name)."""
    p = critic["params"]["VmapCritic_0"]["MLP_0"]
    out = {name: {kind: np.stack([build(i, {k: v[0] for k, v in p[name].items()}, name)[kind]
                                  for i in range(N)]) for kind in ("kernel", "bias")}
           for name in p}
    return {"params": {"VmapCritic_0": {"MLP_0": out}}}


def test_constructed_ensembles():
    """Identical critics: every pair has cosine 1, ES = N(N-1)/(N-1) = N, the maximum.
    k critics equal to Q and N-k equal to -Q: ES = ((k - (N-k))^2 - N)/(N-1).
    Critics i < 3 seeing only action coordinate i, the others no action: ES = 0."""
    critic = critic_np(make_state().sac.critic)
    b = as_np(fixed_batch())

    same = with_members(critic, lambda i, layer, name: layer)
    assert np.isclose(run64(same)[1], N, rtol=1e-6)

    for k in (4, 3):
        def signs(i, layer, name, k=k):
            flip = -1.0 if i >= k and name == "Dense_2" else 1.0
            return {kind: flip * v for kind, v in layer.items()}
        es = run64(with_members(critic, signs))[1]
        assert np.isclose(es, ((2 * k - N) ** 2 - N) / (N - 1), rtol=1e-6), (k, es)

    obs_size = SPEC.observation_size

    def one_coordinate(i, layer, name):
        if name != "Dense_0":
            return layer
        kernel = layer["kernel"].copy()
        for coordinate in range(SPEC.action_size):
            if coordinate != i:
                kernel[obs_size + coordinate] = 0.0
        return {"kernel": kernel, "bias": layer["bias"]}
    orthogonal = with_members(critic, one_coordinate)
    g, es, es_grads, *_ = run64(orthogonal)
    assert abs(es) < 1e-12
    assert np.all(g[3:] == 0) and (np.abs(g[:3]).sum(-1) > 0).mean() > 0.9
    # ES's parameter gradient stays finite where an action gradient is exactly zero
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(es_grads))
    reference = [np_q_and_action_grad(layers, b.obs, b.action)[1]
                 for layers in np_members(orthogonal)]
    assert abs(np_es(reference)) < 1e-12


def test_update():
    """One jitted float32 step: scalar finite metrics, ES reported at the pre-update critics,
    Polyak-averaged target, deterministic actions in [-1, 1]."""
    state, batch = make_state(), fixed_batch()
    new, metrics = jax.jit(edac.update)(state, batch, jax.random.PRNGKey(0))
    assert all(np.shape(m) == () and np.isfinite(float(m)) for m in metrics.values())
    b = as_np(batch)
    critic = critic_np(state.sac.critic)
    grads = [np_q_and_action_grad(layers, b.obs, b.action)[1] for layers in np_members(critic)]
    np.testing.assert_allclose(float(metrics["diversity_loss"]), np_es(grads), rtol=1e-4)
    tau = state.sac.config.tau
    for online, old, target in zip(jax.tree.leaves(new.sac.critic),
                                   jax.tree.leaves(state.sac.target_critic),
                                   jax.tree.leaves(new.sac.target_critic), strict=True):
        np.testing.assert_allclose(np.asarray(target),
                                   tau * np.asarray(online) + (1 - tau) * np.asarray(old),
                                   rtol=1e-6, atol=1e-7)
    assert int(new.sac.steps) == 1
    action = edac.act(new, batch.obs, jax.random.PRNGKey(1), True)
    assert action.shape == batch.action.shape and np.all(np.abs(np.asarray(action)) <= 1)
    assert edac.policy_params(new) is new.sac.actor


def test_action_gradients_with_shared_layer_norm():
    """With LB-SAC's shared critic LayerNorm the per-member action gradients come from the very
    parameters the TD loss uses: grad_a Q_i(s, a) equals the gradient of member i of sac's critic
    ensemble, member by member (each member's Q depends on its own action only)."""
    cfg = edac.Config(hidden=(16, 16), num_critics=N, eta=ETA, edac_init=False,
                      critic_layer_norm=True, critic_layer_norm_shared=True)
    s = edac.init(jax.random.PRNGKey(1), SPEC, cfg).sac
    assert s.critic["params"]["LayerNorm_0"]["scale"].shape == (16,)
    s = s.replace(critic=jax.tree_util.tree_map_with_path(  # shared LayerNorm off its identity
        lambda path, x: x * 1.5 + 0.1 if "LayerNorm" in jax.tree_util.keystr(path) else x,
        s.critic))
    batch = fixed_batch()
    got = edac.action_gradients(s.critic, s, batch.obs, batch.action)
    critic_net = edac.sac.networks(s.config, s.spec)[1]
    for i in range(N):
        want = jax.grad(lambda a, i=i: critic_net.apply(s.critic, batch.obs, a)[i].sum())(
            batch.action)
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_tanh_log_prob_difference_is_declared():
    """networks.py's exact log(1 - tanh(u)^2) (pinned in test_sac_n) against CORL's EDAC +1e-6."""
    assert "log(1 - tanh(u)^2 + 1e-6)" in edac.__doc__
