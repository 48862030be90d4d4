"""Acceptance: a database newer than this capataz is refused by the real `capataz`
command (queue commands, `db upgrade`, a runner, `serve`) with one line and exit 2, on
SQLite and PostgreSQL, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from tests.cli.test_cli import CONFIG, assert_one_line_error
from tests.postgres import free_port

from capataz.store import create_engine_for
from capataz.store.migrate import HEAD


def capataz(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "CAPATAZ_DATABASE_URL": url},
    )


def _stamped(url: str, revision: str | None = None) -> str:
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            if revision is not None:
                conn.execute(
                    sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision}
                )
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def test_a_newer_database_is_refused_in_one_line(
    queue_url: str, make_repo: Callable[..., Path]
) -> None:
    repo = make_repo(config=CONFIG)
    upgraded = capataz(queue_url, "db", "upgrade", cwd=repo)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at revision {HEAD}" in upgraded.stdout
    _stamped(queue_url, "0999")
    commands = (
        ["task", "list"],
        ["task", "add", "echo hi"],
        ["db", "upgrade"],
        ["runner", "run", "--exit-when-idle"],  # a runner does not wait it out either
        ["serve", "--port", str(free_port())],
    )
    for command in commands:
        result = capataz(queue_url, *command, cwd=repo)
        assert_one_line_error(
            result,
            f"the database is at schema 0999, newer than this capataz ({HEAD})",
            "upgrade capataz on this machine",
        )
    assert _stamped(queue_url) == "0999"  # nothing ran against it
