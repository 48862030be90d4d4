"""The package picture of docs/architecture.md, enforced: imports point one way.

Each module of ``capataz`` may import the foundation and packages of a lower layer
(and its own package), never one beside or above it: the store never reaches into the
pipeline, the pipeline never into the runner, nothing but the CLI into the CLI. Read
from the source with ``ast`` (imports inside functions count too), so it needs nothing
installed and names the offending line."""

from __future__ import annotations

import ast
from pathlib import Path

import capataz

ROOT = Path(capataz.__file__).parent

# Bottom to top. The foundation is ordered too: each of its modules imports only those
# before it, so it has no cycle and a newcomer sees where a helper belongs.
FOUNDATION = [
    "errors",
    "retry",
    "units",
    "models",
    "names",
    "visible",
    "redaction",
    "events",
    "statedir",
    "config",
]
LAYERS = [
    {"sandbox", "workspace", "store"},
    {"gates", "agents", "secrets", "prd"},
    {"context"},
    {"pipeline"},
    {"intake", "runner"},
    {"planner", "mcpserver"},
    {"api", "setup"},
    {"cli"},
    {"__main__"},
]
MAX_ROOT_MODULES = 12


def rank(name: str) -> tuple[int, int]:
    if name in FOUNDATION:
        return (0, FOUNDATION.index(name))
    for number, layer in enumerate(LAYERS, start=1):
        if name in layer:
            return (number, 0)
    raise AssertionError(f"capataz.{name} is in no layer: add it to docs/architecture.md")


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level capataz name) for every import of capataz in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "capataz":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from capataz import redaction
                found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "capataz" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
    return found


def owner(path: Path) -> str:
    relative = path.relative_to(ROOT).parts
    return relative[0] if len(relative) > 1 else path.stem


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts or (path.stem == "__init__" and path.parent == ROOT):
            continue
        mine = owner(path)
        for line, other in imported(path):
            if other == mine:
                continue
            if rank(other) >= rank(mine):
                where = path.relative_to(ROOT.parent)
                wrong.append(f"{where}:{line}: {mine} imports {other}")
    assert wrong == []


def test_the_package_root_holds_the_foundation_only() -> None:
    modules = sorted(p.stem for p in ROOT.glob("*.py"))
    assert len(modules) <= MAX_ROOT_MODULES, modules
    assert set(modules) <= {*FOUNDATION, "__init__", "__main__"}, modules


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The rule above must be able to fail: a store module importing the pipeline."""
    module = tmp_path / "bad.py"
    module.write_text("from capataz.pipeline.supervisor import Supervisor\n")
    assert imported(module) == [(1, "pipeline")]
    assert rank("pipeline") > rank("store")
