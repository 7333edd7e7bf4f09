"""RIQL's adversarial corruptions (offbench/data/adversarial.py): exactly RATE of the rows change,
within the EPS-ball, the attack lowers the attacker's Q-value more than a random perturbation
of the same size, rewards r' = -EPS r, the same bytes from the same id (cache or fresh training),
and one clear error for bad parameters. A tiny attacker (300 updates of a 32x32 TD3+BC) keeps
the file's time small; the real budget is adversarial.ATTACKER's."""

import re

import numpy as np
import pytest

from offbench.data import adversarial, load, transforms

from conftest import TINY_DATASET

TINY_ATTACKER = adversarial.Attacker(updates=300, hidden=(32, 32), batch_size=64)
RATE, EPS = 0.3, 1.0
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


@pytest.fixture(scope="module")
def attack_env(minari_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("offbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFFBENCH_CACHE", str(cache))
        mp.setattr(adversarial, "ATTACKER", TINY_ATTACKER)
        yield cache / "adversarial"


def arrays(dataset):
    return {k: np.asarray(getattr(dataset, k)) for k in KEYS}


def variant(field, rate=RATE, eps=EPS):
    return f"{TINY_DATASET}+corrupt={field}:adversarial:{rate}:{eps}"


@pytest.mark.parametrize("field,key", [("obs", "observations"), ("act", "actions"),
                                       ("dyn", "next_observations"), ("rew", "rewards")])
def test_exactly_the_rate_changes_within_the_eps_ball(attack_env, field, key):
    clean = arrays(load(TINY_DATASET))
    dirty_set = load(variant(field))
    dirty = arrays(dirty_set)
    n = len(clean["rewards"])
    rows = dirty_set.metadata["corrupted_rows"][f"+corrupt={field}:adversarial:{RATE}:{EPS}"]
    assert len(rows) == int(RATE * n) and len(set(rows.tolist())) == len(rows)
    changed = np.any((dirty[key] != clean[key]).reshape(n, -1), axis=1)
    assert set(np.flatnonzero(changed)) <= set(rows.tolist())
    assert changed.sum() >= 0.95 * len(rows)  # (a reward of 0, an action at a bound: unchanged)
    for other in set(clean) - {key}:  # nothing else moves
        np.testing.assert_array_equal(dirty[other], clean[other])
    if field == "rew":  # RIQL's adversarial reward: r' = -eps * r
        np.testing.assert_array_equal(dirty[key][rows], (-EPS * clean[key][rows]).astype(
            np.float32))
    else:  # ||s' - s||_inf <= eps * std(s) per dimension
        std = clean[key].std(0)
        assert np.all(np.abs(dirty[key][rows] - clean[key][rows]) <= EPS * std + 1e-5)
        if field == "act":
            assert np.abs(dirty[key]).max() <= 1.0


def test_the_reward_rule_on_hand_made_rewards():
    flat = {"rewards": np.array([1.0, -2.0, 0.5, 3.0, 0.0], np.float32)}
    rows = np.array([1, 3, 4])
    adversarial.corrupt("rew", 2.0, rows, np.random.default_rng(0), flat, flat, "hopper")
    np.testing.assert_array_equal(flat["rewards"], np.array([1.0, 4.0, 0.5, -6.0, -0.0],
                                                            np.float32))


@pytest.mark.parametrize("field,key", [("obs", "observations"), ("act", "actions"),
                                       ("dyn", "next_observations")])
def test_the_attack_lowers_q_more_than_random_perturbations_of_its_size(attack_env, field, key):
    import jax.numpy as jnp

    base = load(TINY_DATASET)
    clean = {**arrays(base), "episode_lengths": base.metadata["episode_lengths"]}
    dirty_set = load(variant(field))
    rows = dirty_set.metadata["corrupted_rows"][f"+corrupt={field}:adversarial:{RATE}:{EPS}"]
    algo, state, mean, std = adversarial.q_function(clean, base.task)

    def q(values):
        obs = values if field in ("obs", "dyn") else clean["observations"][rows]
        action = values if field == "act" else clean["actions"][rows]
        return np.asarray(adversarial.value(algo, state, jnp.asarray(mean), jnp.asarray(std),
                                            field, obs, action))

    q_clean = q(clean[key][rows])
    q_attacked = q(np.asarray(getattr(dirty_set, key))[rows])
    # a random corner of the same ball (as far as the attack may go in every dimension)
    signs = np.random.default_rng(1).choice([-1.0, 1.0], size=clean[key][rows].shape)
    random = clean[key][rows] + signs * EPS * clean[key].std(0)
    if field == "act":
        random = np.clip(random, -1.0, 1.0)
    q_random = q(random.astype(np.float32))
    assert q_attacked.mean() < q_clean.mean() and q_attacked.mean() < q_random.mean()
    assert np.mean(q_attacked < q_clean) > 0.95
    assert np.mean(q_attacked < q_random) > 0.75  # (PGD finds a local minimum per row)


def test_the_same_id_gives_the_same_bytes_from_the_cache_and_fresh(attack_env):
    ids = [variant("obs"), variant("dyn")]
    first = [arrays(load(i)) for i in ids]
    files = sorted(attack_env.glob("*.msgpack"))
    assert len(files) == 1  # one attacker per clean dataset, shared by its corruptions
    saved = files[0].read_bytes()
    files[0].unlink()  # trained again: the same parameters, the same corrupted bytes
    again = [arrays(load(i)) for i in ids]
    assert files[0].read_bytes() == saved
    for a, b in zip(first, again, strict=True):
        for k in KEYS:
            assert a[k].tobytes() == b[k].tobytes(), k
    other = arrays(load(variant("obs") + "+seed=1"))  # other rows and starts
    assert other["observations"].tobytes() != first[0]["observations"].tobytes()


def test_the_cache_key_follows_the_attacker_and_the_data(attack_env, monkeypatch):
    base = load(TINY_DATASET)
    clean = {**arrays(base), "episode_lengths": base.metadata["episode_lengths"]}
    key = adversarial.cache_key(clean, "hopper")
    monkeypatch.setattr(adversarial, "ATTACKER", adversarial.Attacker(updates=301,
                                                                      hidden=(32, 32)))
    assert adversarial.cache_key(clean, "hopper") != key
    monkeypatch.setattr(adversarial, "ATTACKER", TINY_ATTACKER)
    assert adversarial.cache_key(clean, "hopper") == key
    clean["rewards"] = clean["rewards"].copy()
    clean["rewards"][0] += 1.0
    assert adversarial.cache_key(clean, "hopper") != key


@pytest.mark.parametrize("bad,message", [
    ("+corrupt=obs:adversarial:0:1", "bad transform '+corrupt=obs:adversarial:0:1'"),
    ("+corrupt=act:adversarial:1.5:1", "bad transform '+corrupt=act:adversarial:1.5:1'"),
    ("+corrupt=rew:adversarial:0.1:0", "bad transform '+corrupt=rew:adversarial:0.1:0'"),
    ("+corrupt=next_obs:adversarial:0.1:1", "bad transform"),
    ("+corrupt=dyn:adversarial:0.1", "bad transform"),
    ("+corrupt=obs:pgd:0.1:1", "+corrupt kind 'pgd' is not supported (supported: "
                               "['random', 'adversarial'])"),
])
def test_bad_adversarial_parameters_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        transforms.split("hopper-medium" + bad)
    assert "KIND random|adversarial" in str(err.value) or "not supported" in str(err.value)


def test_an_attack_in_chunks_matches_one_in_one_piece(attack_env, monkeypatch):
    """Rows beyond CHUNK are attacked in padded chunks of CHUNK rows (one compile); a row's
    attack does not depend on its neighbours, so the chunks give the rows one piece gives (up to
    float rounding of other matmul shapes, which may flip a sign step where a gradient is ~0)."""
    whole = arrays(load(variant("obs")))
    monkeypatch.setattr(adversarial, "CHUNK", 256)  # 600 rows: 3 chunks, the last padded
    pieces = [arrays(load(variant("obs"))) for _ in range(2)]
    assert pieces[0]["observations"].tobytes() == pieces[1]["observations"].tobytes()
    close = np.isclose(pieces[0]["observations"], whole["observations"], atol=1e-4).all(1)
    assert close.mean() > 0.99


def test_only_attacks_on_a_q_function_depend_on_the_attacker():
    assert transforms.split("hopper-medium+corrupt=obs:adversarial:0.1:1").adversarial
    assert transforms.split("hopper-medium+corrupt=rew:random:0.1:1"
                            "+corrupt=dyn:adversarial:0.1:1").adversarial
    assert not transforms.split("hopper-medium+corrupt=rew:adversarial:0.1:1").adversarial
    assert not transforms.split("hopper-medium+corrupt=obs:random:0.1:1").adversarial


def test_the_attackers_training_data_are_the_offline_loops(attack_env):
    # adversarial.py prepares the attacker's minibatch arrays itself (the data layer may not
    # import the loop): they must be what offbench.loops.offline.prepare gives TD3+BC
    from offbench.algorithms import load_algorithm
    from offbench.loops.offline import prepare

    dataset = load(TINY_DATASET)
    clean = {**arrays(dataset), "episode_lengths": dataset.metadata["episode_lengths"]}
    algo = load_algorithm(adversarial.ATTACKER.algorithm)
    config = adversarial._config(algo)
    ours, mean, std = adversarial.training_arrays(clean, config)
    loop = prepare(algo, config, dataset)
    assert set(ours) == set(loop.arrays)
    for name, value in ours.items():
        np.testing.assert_array_equal(value, np.asarray(loop.arrays[name]), err_msg=name)
    np.testing.assert_array_equal(mean, loop.obs_mean)
    np.testing.assert_array_equal(std, loop.obs_std)
