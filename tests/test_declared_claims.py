"""A sweep spec's declared claims in an offline report (offbench/reports/declared.py `claims`):
verdicts by the offline check's rule, the section placed before the learning curves, and a
malformed claim rejected before anything runs."""

import pandas as pd
import pytest

from offbench.reports import declared


def table():
    # 3 seeds each; std 3 -> SE 3 / sqrt(2) per run, difference SE 3
    return pd.DataFrame({
        "dataset": ["d1"] * 3 + ["d2"] * 2,
        "algorithm": ["a", "b", "c", "a", "b"],
        "last": [50.0, 40.0, 49.0, 10.0, 30.0],
        "last_std": [3.0] * 5, "seeds": [3] * 5})


def test_claim_verdicts():
    checks = declared.claim_checks(table(), [("a", "b"), ("a", "c"), ("c", "missing")])
    got = {text: held for text, held, _ in checks}
    assert got == {"a beats b on d1": "held", "a beats c on d1": "within noise",
                   "a beats b on d2": "NOT held"}
    assert "2 SE 6.0" in checks[0][2]


def test_claims_section_precedes_the_curves(tmp_path):
    out = tmp_path / "check.md"
    out.write_text("# T\n\ntable\n\n## Learning curves\n\n![x](x.png)\n")
    declared.add_claims(out, table(), [("a", "b"), ("x", "y")])
    text = out.read_text()
    assert text.index("## Declared claims") < text.index("## Learning curves")
    assert "- held: a beats b on d1" in text and "- not run: x beats y" in text


def test_malformed_claims_are_rejected():
    spec = {"name": "s", "report": [{"kind": "offline", "out": "x.md", "budget": "b",
                                     "claims": [["a"]]}]}
    with pytest.raises(ValueError, match="claims"):
        declared.parse(spec)
    spec["report"][0]["claims"] = [["a", "b"]]
    assert declared.parse(spec)[0]["claims"] == [["a", "b"]]
    spec["report"][0]["kind"] = "o2o"
    with pytest.raises(ValueError, match="claims"):
        declared.parse(spec)
