"""The reports a sweep spec declares: its `[[report]]` tables, written by `offbench sweep SPEC
--report` (`make sweep SPEC=...`) once the spec's cells have run, so that a learning check or a
diagnosis is reproduced by its spec alone.

    [[report]]
    kind = "offline"                  # offline | o2o | hybrid | probe | robustness
    out = "results/checks/offline/check.md"
    title = "Offline learning check"  # optional (every kind has a default)
    budget = "20k updates per seed, ..."   # the budget line the report prints (not probe)
    sweeps = ["offline-check"]        # whose cells it reads (default: this spec's name)
    datasets = ["walker2d-medium-expert-100k"]   # optional subset (offline, probe, robustness)
    thresholds = { "hopper-medium-replay-100k" = 40.0 }   # hybrid only, optional
    samples = 2048                    # probe only, optional
    claims = [["mopo[dynamics=true]", "mopo[dynamics=learned]"]]   # offline only, optional:
                                      # "A beats B" on every dataset where both ran, each
                                      # held / NOT held / within noise (A, B: the table's labels)

A spec's `needs = ["other.toml", ...]` (paths relative to the spec's folder) names the specs
whose cells its reports read besides its own; `offbench sweep` runs those first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

KINDS = ("offline", "o2o", "hybrid", "probe", "robustness")
FIELDS = {"kind": str, "out": str, "title": str, "budget": str, "sweeps": list,
          "datasets": list, "thresholds": dict, "samples": int, "claims": list}
# fields a kind reads besides kind, out and sweeps (anything else is a mistake in the spec)
KIND_FIELDS = {"offline": {"title", "budget", "datasets", "claims"},
               "o2o": {"title", "budget"}, "hybrid": {"title", "budget", "thresholds"},
               "probe": {"title", "datasets", "samples"},
               "robustness": {"title", "budget", "datasets"}}


def parse(spec: dict) -> list[dict]:
    """The spec's report tables, checked and completed (sweeps default to the spec's name).
    One ValueError listing every problem, before anything runs."""
    tables = spec.get("report", [])
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list):
        raise ValueError("sweep spec: 'report' must be a table or an array of tables "
                         "([[report]])")
    problems: list[str] = []
    reports: list[dict] = []
    for i, table in enumerate(tables):
        where = f"report[{i}]"
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table, got {table!r}")
            continue
        kind = table.get("kind")
        if kind not in KINDS:
            problems.append(f"{where}.kind: {kind!r} is not one of {list(KINDS)}")
            continue
        if "out" not in table:
            problems.append(f"{where}.out: missing (the report's Markdown path)")
        allowed = {"kind", "out", "sweeps"} | KIND_FIELDS[kind]
        for key, value in table.items():
            if key not in allowed:
                problems.append(f"{where}.{key}: not a field of a '{kind}' report; "
                                f"fields: {sorted(allowed)}")
            elif not isinstance(value, FIELDS[key]) or isinstance(value, bool):
                problems.append(f"{where}.{key}: expected {FIELDS[key].__name__}, got "
                                f"{value!r}")
        claims = table.get("claims", [])
        if isinstance(claims, list) and not all(
                isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c)
                for c in claims):
            problems.append(f"{where}.claims: expected a list of [better, worse] label pairs, "
                            f"got {claims!r}")
        if kind in ("offline", "o2o", "hybrid", "robustness") and "budget" not in table:
            problems.append(f"{where}.budget: missing (the budget line the report prints)")
        reports.append({"sweeps": [spec.get("name")], **table})
    if problems:
        raise ValueError("sweep spec " + repr(spec.get("name")) + ": bad [[report]] tables:\n  "
                         + "\n  ".join(problems))
    return reports


def needs(spec: dict, spec_path: Path) -> list[Path]:
    """The spec files this spec's reports need run first, resolved beside it."""
    names = spec.get("needs", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"sweep spec {spec_path}: 'needs' must be a list of spec files")
    paths = [(spec_path.parent / n) for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"sweep spec {spec_path}: 'needs' names missing spec files {missing}")
    return paths


def write(reports: list[dict], store_root: Path | str,
          log: Callable[[str], None] = print, only: Collection[str] | None = None
          ) -> list[Path]:
    """Write each declared report from the store's cells (`only` those named, when given: the
    cells the specs ask for now, store.sweep_cells); returns the paths written."""
    from offbench.harness.store import Store, sweep_cells

    written = []
    for report in reports:
        out = Path(report["out"])
        kind = report["kind"]
        if kind in ("offline", "probe", "robustness"):
            label = (f"sweep '{report['sweeps'][0]}'" if len(report["sweeps"]) == 1 else None)
            runs = [c.path for c in sweep_cells(Store(store_root), report["sweeps"], label=label,
                                                log=log, datasets=report.get("datasets"),
                                                only=only)]
            _write_runs(kind, report, runs, out)
        elif kind == "o2o":
            from offbench.reports import mixed

            mixed.write_o2o(store_root, report["sweeps"], out, report["budget"], only,
                            **_title(report))
        else:
            from offbench.reports import mixed

            mixed.write_hybrid(store_root, report["sweeps"], out, report["budget"],
                               {k: float(v) for k, v in report.get("thresholds", {}).items()},
                               only, **_title(report))
        log(f"wrote {out}")
        written.append(out)
    return written


def _title(report: dict) -> dict:
    return {"title": report["title"]} if "title" in report else {}


def _write_runs(kind: str, report: dict, runs: list[Path], out: Path) -> Any:
    title = _title(report)
    if kind == "offline":
        from offbench.reports import offline

        table = offline.write_report(runs, out, report["budget"], **title)
        if report.get("claims"):
            add_claims(out, table, [tuple(c) for c in report["claims"]])
        return table
    if kind == "robustness":  # clean vs corrupted datasets: offbench/reports/robustness.py
        from offbench.reports import robustness

        return robustness.write_report(runs, out, report["budget"], **title)
    from offbench.reports import probe

    runs = probe.with_critics(runs)
    if not runs:
        raise ValueError(f"{out}: none of the runs of {report['sweeps']} has a critic to probe")
    return probe.write_report(runs, out, report.get("samples", 2048), **title)


def claim_checks(table: Any, claims: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(statement, verdict, detail) of each declared claim (A, B), "A beats B", on every
    dataset of the offline report's table where both labels ran: the offline check's rule
    (offbench/reports/offline.py `verdict`: the difference of the mean last scores against
    twice its standard error over seeds)."""
    from offbench.reports import offline

    checks = []
    for dataset in table.dataset.unique():
        rows = table[table.dataset == dataset].set_index("algorithm")
        checks += [offline.beats(rows, better, worse, f"{better} beats {worse} on {dataset}")
                   for better, worse in claims if {better, worse} <= set(rows.index)]
    return checks


def add_claims(out: Path, table: Any, claims: list[tuple[str, str]]) -> None:
    """The offline report at `out` with a "Declared claims" section (the spec's `claims`)
    before its learning curves; a claim whose labels never ran together is listed as such."""
    from offbench.io import write_text_atomic

    checks = claim_checks(table, claims)
    tested = {text.rsplit(" on ", 1)[0] for text, _, _ in checks}
    untested = [f"{a} beats {b}" for a, b in claims if f"{a} beats {b}" not in tested]
    section = ["## Declared claims", "",
               "The sweep spec's claims (`claims` of its [[report]]), on each dataset where both "
               "ran, by the rule above: held when the difference in mean last score is more "
               "than twice its standard error over seeds, NOT held that far the other way, "
               "else within noise.", "",
               *[f"- {held}: {text} ({detail})" for text, held, detail in checks],
               *[f"- not run: {text} (no dataset has both)" for text in untested], ""]
    text = out.read_text()
    marker = "## Learning curves"
    head, sep, tail = text.partition(marker)
    text = head + "\n".join(section) + "\n" + sep + tail if sep else text + "\n" + "\n".join(
        section)
    write_text_atomic(out, text)
