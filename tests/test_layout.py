"""The package's layering: data flows one way (envs/data -> loops -> harness -> reports -> cli),
so no module of offbench imports, directly or through others, a module that imports it back.
Lazy imports inside functions count too: they are how a circle hides."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "offbench"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_offbench_modules():
    graph = import_graph()
    assert "offbench.harness.sweep" in graph and graph["offbench.harness.sweep"]
    assert cycles(graph) == []


def test_cli_reference_is_generated_from_the_parser():
    from offbench import clidoc

    page = (PACKAGE.parent / "docs" / "cli.md").read_text()
    assert page == clidoc.markdown(), ("docs/cli.md is stale: regenerate it with "
                                       "`.venv/bin/python -m offbench.clidoc > docs/cli.md`")
    # every command and its options are on the page
    assert "## offbench sweep" in page and "--report" in page


def test_the_algorithms_install_as_offbench_baselines_not_baselines():
    """baselines/ installs as `offbench_baselines` (a top-level `baselines` would shadow
    OpenAI's package), so nothing may import the folder by its own name."""
    import importlib.util
    import tomllib

    root = PACKAGE.parent
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"offbench_baselines": "baselines"}
    # every subpackage of offbench is listed for installation
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed and "offbench_baselines" in listed
    module = importlib.import_module("offbench_baselines.iql")
    assert Path(module.__file__).resolve() == root / "baselines" / "iql.py"
    offenders = []
    for folder in ("offbench", "baselines", "tests", "examples"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import)
                         else [])
                if any(n == "baselines" or n.startswith("baselines.") for n in names):
                    offenders.append(str(path.relative_to(root)))
    assert offenders == [], f"import offbench_baselines, not baselines: {offenders}"
