"""Dataset statistics of variants (ids with transforms): `offbench datasets report ID+...` and
`datasets info` compute returns, TQ and SACo on the transformed data."""

import json

import numpy as np
import pandas as pd
import pytest

from offbench import cli, data
from offbench.data import stats

BASE = "hopper-random-3k"
VARIANT = BASE + "+episodes=0.5+corrupt=obs:random:0.5:2.0+seed=3"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFFBENCH_DATASETS", str(root))
        data.build(data.parse(BASE), log=lambda *_: None)
        data.build(data.parse("hopper-full-replay-3k"), log=lambda *_: None)
        yield root


def by_hand(dataset_id):
    """Mean return over whole episodes, episode count and SACo, computed here from the arrays."""
    ds = data.load(dataset_id)
    lengths = np.asarray(ds.metadata["episode_lengths"])
    ends = np.cumsum(lengths)
    returns = np.array([np.asarray(ds.rewards, np.float64)[e - n:e].sum()
                        for n, e in zip(lengths, ends, strict=True)])
    whole = (np.asarray(ds.terminals)[ends - 1] > 0) | (lengths >= 1000)
    ref = data.load("hopper-full-replay-3k")
    saco = stats.saco(np.asarray(ds.observations), np.asarray(ds.actions),
                      np.asarray(ref.observations), np.asarray(ref.actions))
    return returns[whole].mean(), len(lengths), saco


def test_datasets_report_tables_the_transformed_data(root, tmp_path, capsys):
    out = tmp_path / "variants.md"
    assert cli.main(["datasets", "report", BASE, VARIANT, "--out", str(out)]) == 0
    df = pd.read_csv(out.with_suffix(".csv")).set_index("id")
    for dataset_id in (BASE, VARIANT):
        mean, episodes, saco = by_hand(dataset_id)
        row = df.loc[dataset_id]
        assert row.return_mean == pytest.approx(mean, rel=1e-9)
        assert row.episodes == episodes and row.saco == pytest.approx(saco, rel=1e-12)
    base, variant = df.loc[BASE], df.loc[VARIANT]
    assert variant.episodes == int(0.5 * base.episodes)  # the transform is applied
    assert variant.saco != base.saco  # observations moved: other cells are occupied
    assert variant.transforms.startswith("episodes=0.5, corrupt=obs:random:0.5:2.0, seed 3")
    assert base.transforms == "none" and variant.base_sha256 == base.base_sha256
    text = out.read_text()
    assert text.startswith("# Dataset variants") and VARIANT in text


def test_datasets_info_adds_transforms_and_saco(root, capsys):
    assert cli.main(["datasets", "info", VARIANT]) == 0
    info = json.loads(capsys.readouterr().out)
    mean, episodes, saco = by_hand(VARIANT)
    assert info["return_mean"] == pytest.approx(mean) and info["episodes"] == episodes
    assert info["saco"] == pytest.approx(saco) and "corrupt=obs" in info["transforms"]
