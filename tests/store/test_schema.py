"""The migrated database is exactly the declared schema, and URLs are handled."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from capataz.errors import CapatazError
from capataz.models import utcnow
from capataz.store import DatabaseUrlError, Store, create_engine_for, database_url, upgrade
from capataz.store.migrate import current_revision, head_revision
from capataz.store.schema import metadata


def assert_declared_schema(engine: sa.Engine) -> None:
    """The database of ``engine`` is at the head and exactly the declared schema (the
    migration-drift check, shared with the concurrent-migration tests)."""
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        tables = set(sa.inspect(conn).get_table_names())
    assert set(metadata.tables) <= tables


def test_migrations_produce_the_declared_schema(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        upgrade(engine)  # idempotent: capataz upgrades on every start
        assert_declared_schema(engine)
    finally:
        engine.dispose()


def test_upgrading_from_0001_keeps_existing_rows(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO runners (id, name, labels, hostname, pid, started_at, last_seen_at)"
                    " VALUES ('r-old', 'old', '[]', 'h', 1, :now, :now)"
                ),
                {"now": utcnow()},
            )
        upgrade(engine)
        store = Store(engine)
        (runner,) = store.runners.list()
        assert (runner.id, runner.concurrency, runner.stopped_at) == ("r-old", 1, None)
    finally:
        engine.dispose()


def test_comparison_would_notice_a_difference(empty_db_url: str) -> None:
    """Guards the test above against comparing nothing."""
    engine = create_engine_for(empty_db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_tasks_run_after"))
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, metadata)
        assert [diff[0] for diff in diffs] == ["add_index"]
    finally:
        engine.dispose()


def test_sqlite_connections_are_set_up_for_many_writers(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_000
    engine.dispose()


def test_database_url_defaults_to_a_file_under_dot_capataz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAPATAZ_DATABASE_URL", raising=False)
    assert database_url(tmp_path) == f"sqlite:///{tmp_path}/.capataz/capataz.db"
    assert (tmp_path / ".capataz").is_dir()
    monkeypatch.setenv("CAPATAZ_DATABASE_URL", "postgresql://u:pw@db.example/capataz")
    assert database_url(tmp_path) == "postgresql+psycopg://u:pw@db.example/capataz"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "not 'mysql'"),
        ("postgresql+asyncpg://u:secret@h/db", "driver 'asyncpg'"),
    ],
)
def test_bad_urls_are_one_line_errors_with_a_fix(url: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        create_engine_for(url)
    assert isinstance(caught.value, CapatazError)
    assert says in caught.value.message
    assert "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.fix


def test_the_fast_path_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from capataz.store.migrate import HEAD, KNOWN, alembic_config

    assert head_revision() == HEAD
    scripts = ScriptDirectory.from_config(alembic_config())
    assert {script.revision for script in scripts.walk_revisions()} == KNOWN
