"""The online-run report: numbers in its table come from the metrics, computed by hand here."""

import json

import pandas as pd

from offbench.reports import online as report


def test_online_report_table_matches_hand_computed_values(tmp_path):
    run = tmp_path / "sac-hopper"
    run.mkdir()
    rows = [{"seed": s, "period": p, "env_steps": 100_000 * (p + 1), "eval_return": r}
            for s, returns in ((0, [100.0, 900.0, 700.0]), (1, [200.0, 300.0, 1100.0]))
            for p, r in enumerate(returns)]
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({"task": "hopper", "algorithm": "sac",
                                              "command": "offbench train-online sac hopper",
                                              "wall_s": 3600.0}))
    out = tmp_path / "sac.md"
    report.write_report([run], out, "check")
    text = out.read_text()
    # final (300k): 700 and 1100 -> mean 900, population std 200; best per seed 900 and 1100
    row = next(line for line in text.splitlines() if line.startswith("| hopper"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["hopper", "2", "300000"]
    assert cells[3] == "900 ± 200" and cells[4] == "1000" and cells[5] == "900"
    assert cells[6] == "> 2500" and cells[7] == "complete"
    assert "offbench train-online sac hopper" in text
    assert (tmp_path / "sac-hopper.png").stat().st_size > 1000
