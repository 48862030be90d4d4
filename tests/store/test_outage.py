"""Which database errors the store calls an outage: only a server that is away.

A database that is gone (PostgreSQL stopped or restarting, SQLite locked past its busy
timeout) raises StoreUnavailable, which the runner waits out; a constraint violation or
a broken statement keeps its SQLAlchemy type and is never retried, on both engines."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.postgres import Cluster, create_database, free_port, no_postgres

from capataz.config import Config
from capataz.errors import Unavailable
from capataz.retry import retry
from capataz.runner import Runner
from capataz.store import Store, StoreError, StoreUnavailable, TaskState
from capataz.store import engine as engine_module
from capataz.store.schema import tasks
from capataz.workspace.repo import Repository


def _duplicate_task(store: Store, task_id: str) -> None:
    """Insert a task whose id exists: a real IntegrityError from the database."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).one()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(tasks).values(**row._asdict()))


def test_an_integrity_error_is_a_bug_not_an_outage(store: Store) -> None:
    task = store.tasks.add("x", "true")
    with pytest.raises(sa.exc.IntegrityError) as raised:
        _duplicate_task(store, task.id)
    assert not isinstance(raised.value, Unavailable)


def test_the_runner_does_not_retry_an_integrity_error(
    store: Store, make_repo: Callable[..., Path]
) -> None:
    """It surfaces at the first attempt instead of being retried for minutes."""
    task = store.tasks.add("x", "true")
    repo = Repository.discover(make_repo())
    runner = Runner(repo, Config(), store)
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        _duplicate_task(store, task.id)

    with pytest.raises(sa.exc.IntegrityError):
        runner.retry(call, "report")
    assert calls == [1]


def test_a_broken_statement_is_not_an_outage(store: Store) -> None:
    """Even where the driver calls it an OperationalError (SQLite's "no such column")."""
    with pytest.raises(sa.exc.DBAPIError) as raised, store.engine.connect() as conn:
        conn.execute(sa.text("SELECT no_such_column FROM tasks"))
    assert not isinstance(raised.value, Unavailable)


@pytest.fixture
def impatient_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A SQLite store that waits only 0.2 s for a write lock (not 30 s)."""
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 200)
    store = Store.open(f"sqlite:///{tmp_path / 'capataz.db'}")
    yield store
    store.close()


def test_sqlite_locked_past_the_busy_timeout_is_an_outage(
    impatient_sqlite: Store, tmp_path: Path
) -> None:
    store = impatient_sqlite
    store.tasks.add("x", "true")
    holder = sqlite3.connect(tmp_path / "capataz.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreUnavailable, match="is unavailable: database is locked"):
            store.tasks.add("y", "true")
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.leases.claim("r1", 30)  # the raw-sqlite3 fast path says the same
        assert [t.title for t in store.tasks.list()] == ["x"]  # reads still work (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.tasks.add("y", "true").status is TaskState.READY


@pytest.fixture
def own_cluster() -> Iterator[tuple[Cluster, str]]:
    """A PostgreSQL of this test's own, so it can be stopped without hurting others."""
    cluster = Cluster()
    try:
        admin = cluster.init()
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        cluster.destroy()
        no_postgres(str(exc))
    try:
        yield cluster, create_database(admin)
    finally:
        cluster.destroy()


def test_a_postgresql_restart_is_an_outage_that_retry_waits_out(
    own_cluster: tuple[Cluster, str],
) -> None:
    cluster, url = own_cluster
    store = Store.open(url)
    try:
        store.tasks.add("before", "true")
        cluster.stop("fast")
        with pytest.raises(StoreUnavailable, match="is unavailable"):
            store.tasks.list()
        outages: list[BaseException] = []
        restart = threading.Timer(1.0, cluster.start)
        restart.start()
        try:
            added = retry(
                lambda: store.tasks.add("after", "true"),
                give_up=60.0,
                on_retry=lambda exc, _delay: outages.append(exc),
            )
        finally:
            restart.join()
        assert added.status is TaskState.READY
        assert outages and all(isinstance(exc, StoreUnavailable) for exc in outages)
        assert [t.title for t in store.tasks.list()] == ["before", "after"]
    finally:
        store.close()


def test_postgresql_killing_a_session_is_an_outage(migrated_pg_url: str) -> None:
    """A connection the server terminated (admin command) is an outage, not a bug."""
    store = Store.open(migrated_pg_url)
    try:
        with store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            with pytest.raises(StoreUnavailable):
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert store.tasks.list() == []  # the pool replaced the dead connection
    finally:
        store.close()


def test_postgresql_refusing_connections_is_an_outage_a_wrong_database_is_not(
    pg_admin_url: str,
) -> None:
    with pytest.raises(StoreUnavailable, match=r"nobody:\*\*\*@127\.0\.0\.1"):
        Store.open(f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x")
    base, _, _ = pg_admin_url.rpartition("/")
    with pytest.raises(StoreError) as raised:
        Store.open(f"{base}/no_such_database_here")
    assert not isinstance(raised.value, Unavailable)  # a setup problem: not retried
    assert "no_such_database_here" in str(raised.value)
