"""The O2O/hybrid throughput benchmark at tiny sizes: one row per (UTD, seeds), rates consistent
with the measured time, and the report written (to a temporary folder, never results/)."""

import numpy as np

from offbench.perf import o2o as perf_o2o
from offbench_baselines import rlpd


def test_o2o_perf_rows_and_report(tmp_path):
    cfg = rlpd.Config(hidden=(8,), num_critics=2, batch_size=8)
    df = perf_o2o.run("hopper", env_steps=4, repeats=1, utds=(1, 3), seeds=(2,),
                      algo_config=cfg, episode_length=5, log=lambda *_: None)
    assert list(zip(df.utd, df.seeds, strict=True)) == [(1, 2), (3, 2)]
    assert (df.total_s > 0).all() and np.isfinite(df.env_steps_per_s).all()
    np.testing.assert_allclose(df.env_steps_per_s, df.seeds * 4 / df.total_s)
    np.testing.assert_allclose(df.updates_per_s, df.env_steps_per_s * df.utd)
    prov = {"command": "test", "git_commit": "abc", "date": "today",
            "machine": {"cpu": "cpu", "cores": 2}}
    perf_o2o.write_report(df, tmp_path, prov)
    text = (tmp_path / "o2o.md").read_text()
    assert "RLPD" in text and "env_steps_per_s" in text and (tmp_path / "o2o.csv").exists()
