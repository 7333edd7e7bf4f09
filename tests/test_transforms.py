"""Dataset variants as ids (offbench/data/transforms.py): scarcity, mixtures and RIQL's random
corruptions, applied on load, the same bytes from the same id, changing exactly what they say."""

import re

import numpy as np
import pytest

from offbench.data import DatasetError, load, transforms
from offbench.data.builder import dataset_fingerprint

from conftest import TINY_DATASET


def arrays(dataset):
    return {k: np.asarray(getattr(dataset, k)) for k in
            ("observations", "actions", "rewards", "next_observations", "terminals")}


def test_the_same_id_gives_the_same_bytes_and_another_seed_others(minari_root):
    variant = TINY_DATASET + "+corrupt=obs:random:0.3:1.0+episodes=0.5"
    a, b = arrays(load(variant)), arrays(load(variant))
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    other = arrays(load(variant + "+seed=1"))
    assert other["observations"].tobytes() != a["observations"].tobytes()


@pytest.mark.parametrize("field,key", [("obs", "observations"), ("act", "actions"),
                                       ("rew", "rewards"), ("dyn", "next_observations")])
def test_a_corruption_changes_exactly_the_rate_it_says(minari_root, field, key):
    clean = arrays(load(TINY_DATASET))
    dirty_set = load(f"{TINY_DATASET}+corrupt={field}:random:0.25:0.5")
    dirty = arrays(dirty_set)
    n = len(clean["rewards"])
    rows = dirty_set.metadata["corrupted_rows"][f"+corrupt={field}:random:0.25:0.5"]
    assert len(rows) == int(0.25 * n)
    changed = np.any(np.atleast_2d((dirty[key] != clean[key]).T).T.reshape(n, -1), axis=1)
    assert set(np.flatnonzero(changed)) <= set(rows.tolist())
    assert changed.sum() >= 0.95 * len(rows)  # (a clipped action may come back unchanged)
    for other in set(clean) - {key}:  # nothing else moves
        np.testing.assert_array_equal(dirty[other], clean[other])
    if field == "rew":  # RIQL: replaced by Uniform[-30 eps, 30 eps]
        assert np.abs(dirty[key][rows]).max() <= 30 * 0.5
    else:  # s + lambda * std(s), lambda ~ U[-eps, eps] per dimension
        std = clean[key].std(0)
        assert np.all(np.abs(dirty[key][rows] - clean[key][rows]) <= 0.5 * std + 1e-5)


def test_scarcity_keeps_the_stated_episodes(minari_root):
    full = load(TINY_DATASET)
    lengths = full.metadata["episode_lengths"]
    half = load(TINY_DATASET + "+episodes=0.5")
    kept = half.metadata["episode_lengths"]
    assert len(kept) == int(0.5 * len(lengths))
    assert len(half.rewards) == kept.sum()


def test_a_mixture_adds_the_stated_episodes_of_another_kind(tmp_path, monkeypatch):
    from offbench import data

    monkeypatch.setenv("OFFBENCH_DATASETS", str(tmp_path))
    data.build(data.parse("hopper-random-3k"), log=lambda *_: None)
    base = load("hopper-random-3k")
    n = len(base.metadata["episode_lengths"])
    mixed = load("hopper-random-3k+mix=random:0.5")
    assert len(mixed.metadata["episode_lengths"]) == n + int(0.5 * n)
    # a variant's cells change with its base dataset's content, not with its name alone
    assert dataset_fingerprint("hopper-random-3k+episodes=0.5") not in (
        None, dataset_fingerprint("hopper-random-3k"))
    with pytest.raises(DatasetError, match=r"\+mix=expert:0.5 needs"):
        load(TINY_DATASET + "+mix=expert:0.5")


@pytest.mark.parametrize("bad,message", [
    ("+episodes=0", "bad transform '+episodes=0'"),
    ("+episodes=1.5", "bad transform '+episodes=1.5'"),
    ("+corrupt=obs:random:2:1", "bad transform"),
    ("+corrupt=foo:random:0.1:1", "bad transform"),
    ("+corrupt=obs:fgsm:0.1:1", "kind 'fgsm' is not supported"),
    ("+mix=expert", "bad transform"),
    ("+seed=-1", "bad transform"),
    ("+shuffle=1", "bad transform '+shuffle=1'"),
])
def test_bad_transforms_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        transforms.split("hopper-medium" + bad)
    assert "the forms are" in str(err.value) or "not supported" in str(err.value)


def test_offbench_run_trains_on_a_variant(minari_root, tmp_path, capsys):
    import json

    from offbench import cli

    variant = TINY_DATASET + "+episodes=0.5+corrupt=rew:random:0.2:1.0"
    flags = ["--seeds", "2", "--updates", "100", "--eval-every", "100", "--eval-episodes", "2",
             "--episode-length", "20", "--backend", "mujoco", "--set", "hidden=32,32",
             "--set", "batch_size=32"]
    assert cli.main(["run", "bc", variant, *flags, "--out", str(tmp_path / "run")]) == 0
    assert "normalized score over 2 seeds" in capsys.readouterr().out
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["dataset"] == variant
