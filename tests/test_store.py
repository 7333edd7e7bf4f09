"""The results store under concurrent writers: sweeps sharing a store register the same cell at
once from several processes, and every sweep's name must survive (a report selected by
`--sweep NAME` would otherwise silently miss cells that ran)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

REGISTER = """
import sys
from offbench.harness.store import Store

root, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(root)
config = {"algorithm": "bc", "dataset": "d", "mode": "offline", "x": 1}
for i in range(n):
    store.register(config, f"{who}-{i}")
"""


def test_concurrent_writers_keep_every_sweep_name(tmp_path):
    n = 150
    writers = [subprocess.Popen([sys.executable, "-c", REGISTER, str(tmp_path), who, str(n)],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)
               for who in ("a", "b", "c")]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*/cell.json")]
    assert sorted(record["sweeps"]) == sorted(f"{w}-{i}" for w in "abc" for i in range(n))
