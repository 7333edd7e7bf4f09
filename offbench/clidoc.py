"""docs/cli.md from the argparse parser, so the CLI reference cannot drift from the CLI:
`python -m offbench.clidoc > docs/cli.md` writes it, and a test fails when it is stale."""

from __future__ import annotations

import argparse
import os

from offbench.cli import build_parser

HEADER = """# Command-line reference

What every `offbench` command and option does: look up a flag here, or run
`offbench COMMAND --help`. Generated from the parser (`python -m offbench.clidoc > docs/cli.md`;
tests/test_layout.py fails when this page is stale). The CLI is `.venv/bin/offbench` after
`make setup` (or `source .venv/bin/activate`).
"""


def markdown(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    # a fixed width: the text must not depend on the terminal that generated it
    os.environ["COLUMNS"] = "100"
    parts = [HEADER]
    _section(parser, "offbench", parts)
    return "\n".join(parts)


def _section(parser: argparse.ArgumentParser, name: str, parts: list[str]) -> None:
    """One section per command, then its subcommands' (`datasets build`, `perf envs`, ...)."""
    parts += [f"{'#' * min(name.count(' ') + 2, 4)} {name}", "", "```text",
              parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                _section(sub, f"{name} {sub_name}", parts)


if __name__ == "__main__":
    print(markdown(), end="")
