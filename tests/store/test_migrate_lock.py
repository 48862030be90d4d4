"""Migrations under a lock, and a database newer than the code refused.

Runners of a fleet start together on a new database: every process migrates on open,
so they must queue for one lock (an advisory lock on PostgreSQL, SQLite's write lock)
and all but the first find the head already there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.store.test_schema import assert_declared_schema

from capataz.errors import CapatazError
from capataz.store import SchemaTooNewError, Store, create_engine_for, upgrade
from capataz.store.migrate import HEAD

OPENERS = 4  # the machine has two cores; four processes still contend for the lock

# Imports first (the slow part), says so, then opens the store when told to: the
# openers race on the migration itself, not on Python's start-up.
OPENER = """
import sys
from pathlib import Path
from capataz.store import Store
print("ready", flush=True)
go = Path(sys.argv[2])
while not go.exists():
    pass
Store.open(sys.argv[1]).close()
print("opened", flush=True)
"""


def test_processes_opening_a_new_database_together_all_succeed(
    empty_db_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, empty_db_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(OPENERS)
    ]
    try:
        for opener in openers:
            assert opener.stdout is not None
            assert opener.stdout.readline().strip() == "ready"
        go.touch()
        results = [opener.communicate(timeout=120) for opener in openers]
    finally:
        for opener in openers:
            opener.kill()
            opener.wait()
    for opener, (stdout, stderr) in zip(openers, results, strict=True):
        assert opener.returncode == 0, stderr
        assert stdout.strip() == "opened"
    engine = create_engine_for(empty_db_url)
    try:
        assert_declared_schema(engine)
    finally:
        engine.dispose()


def _stamp(url: str, revision: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_a_database_newer_than_the_code_is_refused_before_anything_runs(
    empty_db_url: str,
) -> None:
    Store.open(empty_db_url).close()
    _stamp(empty_db_url, "0999")
    engine = create_engine_for(empty_db_url)
    try:
        for attempt in (lambda: Store.open(empty_db_url), lambda: upgrade(engine)):
            with pytest.raises(SchemaTooNewError) as caught:
                attempt()
            assert isinstance(caught.value, CapatazError)
            assert str(caught.value) == (
                f"the database is at schema 0999, newer than this capataz ({HEAD})"
                " — upgrade capataz on this machine"
            )
        with engine.connect() as conn:
            stamped = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert stamped == "0999"  # untouched
    finally:
        engine.dispose()


def test_an_older_database_is_upgraded_on_open(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        upgrade(engine, "0005")
        Store.open(empty_db_url).close()
        assert_declared_schema(engine)
    finally:
        engine.dispose()
