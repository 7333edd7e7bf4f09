"""RIQL's adversarial corruptions (`+corrupt=FIELD:adversarial:RATE:EPS`): a gradient attack on a
Q-function trained on the clean data (Yang et al. 2023, "Towards Robust Offline RL under Diverse
Data Corruption", Sec. 3 and App. A; the authors' code: github.com/YangRui2015/RIQL, attack.py).

For the int(RATE x N) chosen transitions (the transform's seeded generator, as for the random
kind, offbench/data/transforms.py), with std the per-dimension std of the field over the
dataset and delta the perturbation in units of std:

    obs   s' = s + delta * std(s),   delta = argmin_{||delta||_inf <= EPS} Q(s + delta std, a)
    act   a' = a + delta * std(a),   delta = argmin_{||delta||_inf <= EPS} Q(s, a + delta std)
    dyn   s'' = s' + delta * std(s'), delta = argmin_{||delta||_inf <= EPS}
                                              Q(s' + delta std, pi(s' + delta std))
    rew   r' = -EPS * r

where Q is the mean over the attacker's critics and pi its deterministic policy (for `dyn` the
value of the next state, the gradient flowing through pi as in the authors' loss_Q_for_next_obs).
The argmin is projected gradient descent from a random start: delta_0 ~ U[-EPS, EPS] per
dimension (the random corruption's draw), then PGD_STEPS = 100 steps of

    delta <- clip(delta - STEP_SIZE * EPS * sign(grad_delta Q), -EPS, EPS),  STEP_SIZE = 0.01

(the authors' optimize_para: 100 steps, each a freshly created Adam with learning rate
0.01 * EPS, whose first step is lr * g / (|g| + 1e-8), i.e. a signed-gradient step, followed by
the clamp to [-EPS, EPS]). The rows' losses are independent, so a row's delta does not depend on
the other rows (theirs: the mean over 10 splits of the rows, the same signs).

The attacker (the authors: an EDAC agent with 10 critics pretrained on the clean dataset for 3M
updates, shipped as files): here TD3+BC (baselines/td3_bc.py, its paper's defaults: 2x256,
batch 256, its observation normalization) trained in-process on the clean transitions for
ATTACKER.updates = 20,000 updates from seed 0; Q is the mean of its twin critics, pi its actor.
Why TD3+BC and not EDAC: it is a Q-function and a deterministic policy learned from the clean
data alone, as EDAC's, at 10x EDAC's updates/s on CPU (results/perf/offline.md: 265 vs 25):
20,000 updates take about 80 s on 2 cores, EDAC would take about 15 minutes for as many. The
"clean data" is the variant's transitions before its first corruption (after any +episodes and
+mix, before any +corrupt), so every adversarial corruption of an id attacks the same Q-function,
as the authors reuse one pretrained agent for all corruptions.

Cache: the trained attacker's parameters are stored under `$OFFBENCH_CACHE/adversarial` (default
`~/.cache/offbench/adversarial`, outside the repository, beside the MuJoCo FFI cache), one
msgpack file per key = sha256 of the clean transitions' bytes, the task, the attacker settings
(ATTACKER), the source of baselines/td3_bc.py and the versions of jax, jaxlib, flax and optax.
The corrupted data is not stored: the PGD runs on every load (docs/datasets.md: its cost). A
file is written once (to a temporary name, then renamed) and the parameters are always read back
from it, so a load from the cache gives the same bytes as a fresh training. Everything is
float32 on CPU with fixed seeds: the same id gives the same bytes on the same machine type and
versions (XLA's CPU kernels may round differently on another instruction set, so bit-identity
across machine types is not promised; the key holds the versions, not the CPU model).

Declared differences from the authors' code: the attacker (TD3+BC, 20k updates, trained here,
above); the exact sign of the gradient (theirs: g / (|g| + 1e-8), the same except where
|g| < ~1e-7); the random start is U[-EPS, EPS] in units of std (theirs draws 2 EPS std (U - 0.5),
in units of the field, and then uses it as a multiple of std: a start scaled by std twice, then
clamped); corrupted actions stay in [-1, 1], the policies' action range: the projection is onto
the intersection of the EPS-ball and [-1, 1] (theirs are not clipped); rows as for the random kind
(exactly int(RATE x N), without replacement; theirs: each with probability RATE).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

PGD_STEPS = 100  # the authors' update_times
STEP_SIZE = 0.01  # the authors' step_size: each step moves delta by STEP_SIZE * EPS
CHUNK = 4096  # rows per compiled attack step (the last chunk padded): memory bound on CPU
VERSION = 1  # bump when the attacker's training changes in a way its key does not see


@dataclasses.dataclass(frozen=True)
class Attacker:
    """The Q-function's training: TD3+BC with these settings, from `seed`, for `updates`."""

    algorithm: str = "td3_bc"
    updates: int = 20_000
    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    batch_size: int = 256


ATTACKER = Attacker()  # tests replace it with a tiny one (monkeypatch)


def cache_root() -> Path:
    """`$OFFBENCH_CACHE/adversarial`, default ~/.cache/offbench/adversarial."""
    root = os.environ.get("OFFBENCH_CACHE") or str(Path.home() / ".cache" / "offbench")
    return Path(root) / "adversarial"


def settings() -> dict:
    """What, besides the clean data, the corrupted bytes depend on (cache key; store cells)."""
    import flax
    import jax
    import jaxlib
    import optax

    from offbench.algorithms import import_algorithm_module

    module = import_algorithm_module(ATTACKER.algorithm)
    source = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    return {"attacker": dataclasses.asdict(ATTACKER), "pgd_steps": PGD_STEPS,
            "step_size": STEP_SIZE, "version": VERSION, "algorithm_source": source,
            "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                         "flax": flax.__version__, "optax": optax.__version__}}


CLEAN_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals",
                "timeouts", "episode_lengths")


def cache_key(clean: dict[str, np.ndarray], task: str) -> str:
    digest = hashlib.sha256()
    for field in CLEAN_FIELDS:
        value = np.ascontiguousarray(clean[field])
        digest.update(f"{field}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    digest.update(json.dumps({"task": task, **settings()}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _config(algo):
    return dataclasses.replace(algo.Config(), hidden=tuple(ATTACKER.hidden),
                               batch_size=ATTACKER.batch_size)


def training_arrays(clean: dict[str, np.ndarray], config) -> tuple[dict, np.ndarray, np.ndarray]:
    """The attacker's minibatch arrays and observation mean/std: what the offline loop's
    `prepare` gives TD3+BC (observations standardized, rewards as they are), built here
    because the data layer may not import the loop; tests/test_adversarial.py checks they are
    the loop's."""
    from offbench.algorithms import (
        config_field,
        contract,
        import_algorithm_module,
        standardize_observations,
    )

    algo = import_algorithm_module(ATTACKER.algorithm)
    if (contract(algo).prepare_dataset is not None or contract(algo).dataset_fields
            or config_field(config, "normalize_reward_by_returns")
            or config_field(config, "reward_scale") != 1.0
            or config_field(config, "reward_bias") != 0.0):
        raise ValueError(f"the attacker {ATTACKER.algorithm} needs a data preparation "
                         "training_arrays does not do")
    arrays = {"obs": np.asarray(clean["observations"]), "action": np.asarray(clean["actions"]),
              "reward": np.asarray(clean["rewards"], np.float32),
              "next_obs": np.asarray(clean["next_observations"]),
              "terminal": np.asarray(clean["terminals"])}
    obs_dim = arrays["obs"].shape[1]
    mean, std = np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32)
    if config_field(config, "normalize_obs"):
        mean, std = standardize_observations(arrays)
    arrays["reward"] = (arrays["reward"] * 1.0 + 0.0).astype(np.float32)
    return arrays, mean.astype(np.float32), std.astype(np.float32)


def _train(algo, config, arrays, spec):
    import jax
    import jax.numpy as jnp

    from offbench.algorithms import Transition

    def sample(arrays, key):  # the loop's uniform draw
        index = jax.random.randint(key, (config.batch_size,), 0, arrays["reward"].shape[0])
        return Transition(**{k: v[index] for k, v in arrays.items()})

    def run(key, arrays):
        k_init, key = jax.random.split(key)
        state = algo.init(k_init, spec, config, arrays)

        def step(carry, _):
            state, key = carry
            key, k_sample, k_update = jax.random.split(key, 3)
            state, _ = algo.update(state, sample(arrays, k_sample), k_update)
            return (state, key), None

        (state, _), _ = jax.lax.scan(step, (state, key), None, length=ATTACKER.updates)
        return state

    return jax.jit(run)(jax.random.PRNGKey(ATTACKER.seed),
                        {k: jnp.asarray(v) for k, v in arrays.items()})


def q_function(clean: dict[str, np.ndarray], task: str):
    """The attacker trained on `clean` (flat transitions with `episode_lengths`), from the cache
    when it holds it: (algorithm module, its state, obs mean, obs std) -- the state's networks
    see (s - mean) / std."""
    import jax
    from flax import serialization

    from offbench.algorithms import EnvSpec, load_algorithm

    algo = load_algorithm(ATTACKER.algorithm)
    config = _config(algo)
    arrays, obs_mean, obs_std = training_arrays(clean, config)
    spec = EnvSpec(clean["observations"].shape[1], clean["actions"].shape[1])
    path = cache_root() / f"{cache_key(clean, task)}.msgpack"
    template = algo.init(jax.random.PRNGKey(0), spec, config, None)
    if not path.exists():
        trained = jax.device_get(_train(algo, config, arrays, spec))
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_bytes(serialization.to_bytes({"actor": trained.actor,
                                                    "critic": trained.critic}))
        os.replace(staging, path)  # readers never see a partial file
    # always from the file, so a fresh training and a cache hit give the same state
    params = serialization.from_bytes({"actor": template.actor, "critic": template.critic},
                                      path.read_bytes())
    state = template.replace(actor=params["actor"], critic=params["critic"])
    return algo, state, obs_mean, obs_std


def value(algo, state, obs_mean, obs_std, field: str, obs, action):
    """The attacked quantity per row: mean over critics of Q(s, a) (obs, act), or of
    Q(s', pi(s')) (dyn, with obs the next observations); raw (unnormalized) observations."""
    import jax
    import jax.numpy as jnp

    obs = (obs - obs_mean) / obs_std
    if field == "dyn":
        action = algo.act(state, obs, jax.random.PRNGKey(0), True)
    return jnp.mean(algo.q_values(state, obs, action), axis=0)


def pgd(field: str, algo, state, obs_mean, obs_std, obs: np.ndarray, action: np.ndarray,
        delta0: np.ndarray, std: np.ndarray, eps: float) -> np.ndarray:
    """The perturbed rows of the attacked field (obs: `obs`, act: `action`, dyn: `obs` holding
    the next observations), by PGD from delta0 (units of std) in the EPS-ball."""
    import jax
    import jax.numpy as jnp

    target = action if field == "act" else obs
    std = np.asarray(std, np.float32)
    low = np.full_like(target, -eps)
    high = np.full_like(target, eps)
    if field == "act":  # the intersection with [-1, 1]: a box in delta too
        safe = np.where(std > 0, std, 1.0)
        low = np.where(std > 0, np.maximum(low, (-1.0 - target) / safe), low)
        high = np.where(std > 0, np.minimum(high, (1.0 - target) / safe), high)
        low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)  # rounding: 0 stays inside
    delta0 = np.clip(delta0, low, high).astype(np.float32)
    mean_, std_q = jnp.asarray(obs_mean), jnp.asarray(obs_std)

    def total(delta, obs, action):
        x = (obs if field != "act" else action) + delta * std
        if field == "act":
            return value(algo, state, mean_, std_q, field, obs, x).sum()
        return value(algo, state, mean_, std_q, field, x, action).sum()

    @jax.jit
    def attack(delta, obs, action, low, high):
        def step(delta, _):
            grad = jax.grad(total)(delta, obs, action)
            return jnp.clip(delta - STEP_SIZE * eps * jnp.sign(grad), low, high), None
        delta, _ = jax.lax.scan(step, delta, None, length=PGD_STEPS)
        return delta

    inputs = [delta0, obs.astype(np.float32), action.astype(np.float32), low, high]
    if len(target) <= CHUNK:  # small data: one call of its own size
        out = np.asarray(attack(*inputs))
    else:  # chunks of CHUNK rows, the last padded by repeating its last row: one compile
        out = np.empty_like(delta0)
        for start in range(0, len(target), CHUNK):
            stop = min(start + CHUNK, len(target))
            pad = CHUNK - (stop - start)
            piece = [np.concatenate([x[start:stop], np.repeat(x[stop - 1:stop], pad, 0)])
                     for x in inputs]
            out[start:stop] = np.asarray(attack(*piece))[:stop - start]
    result = (target + out * std).astype(np.float32)
    if field == "act":
        result = np.clip(result, -1.0, 1.0)
    return result


def corrupt(field: str, eps: float, rows: np.ndarray, rng: np.random.Generator,
            flat: dict[str, np.ndarray], clean: dict[str, np.ndarray], task: str) -> None:
    """The adversarial corruption of `rows` of flat[FIELD] in place (FIELD: obs, act, rew, dyn);
    `clean` is what the Q-function learns from (the transitions before any corruption)."""
    if field == "rew":
        flat["rewards"][rows] = (-eps * flat["rewards"][rows]).astype(np.float32)
        return
    key = {"obs": "observations", "act": "actions", "dyn": "next_observations"}[field]
    values = flat[key]
    std = values.std(0).astype(np.float32)
    delta0 = rng.uniform(-eps, eps, (len(rows), values.shape[1])).astype(np.float32)
    if len(rows) == 0:
        return
    algo, state, obs_mean, obs_std = q_function(clean, task)
    obs = flat["next_observations" if field == "dyn" else "observations"][rows]
    values[rows] = pgd(field, algo, state, obs_mean, obs_std, obs, flat["actions"][rows],
                       delta0, std, eps)
    flat[key] = values.astype(np.float32)
