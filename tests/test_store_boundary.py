"""The database stays behind the store: only ``capataz/store`` imports SQLAlchemy, its
drivers or Alembic.

Everything above the store sees capataz's own errors (``StoreUnavailable`` for a
database that is away, ``ValueRefusedError``, a StoreError for one that cannot be
opened), never a driver's: so the runner cannot mistake a bug for an outage again, and
the API and the CLI cannot grow handlers for SQL they should not know about. Read with
``ast`` like tests/test_architecture.py (imports inside functions count; an import
under ``if TYPE_CHECKING:`` is allowed, since it never runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import capataz

ROOT = Path(capataz.__file__).parent
STORE = ROOT / "store"
DATABASE_LIBRARIES = {"sqlalchemy", "psycopg", "psycopg2", "alembic", "sqlite3"}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of statements inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def database_imports(path: Path) -> list[tuple[int, str]]:
    """(line, library) for every run-time import of a database library in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in DATABASE_LIBRARIES and node.lineno not in typing_only:
                found.append((node.lineno, top))
    return found


def test_only_the_store_imports_database_libraries() -> None:
    wrong = [
        f"{path.relative_to(ROOT.parent)}:{line}: imports {library}"
        for path in sorted(ROOT.rglob("*.py"))
        if not path.is_relative_to(STORE)
        for line, library in database_imports(path)
    ]
    assert wrong == []


def test_the_check_sees_a_database_import(tmp_path: Path) -> None:
    """The rule must be able to fail: plain, dotted, from-, in-function imports count;
    a typing-only one does not."""
    module = tmp_path / "bad.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "import sqlalchemy as sa\n"
        "from sqlalchemy.exc import DBAPIError\n"
        "def f():\n"
        "    import psycopg.errors\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.engine import Engine\n"
    )
    assert sorted(database_imports(module)) == [
        (2, "sqlalchemy"),
        (3, "sqlalchemy"),
        (5, "psycopg"),
    ]
