"""Every store test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from CAPATAZ_TEST_PG_URL (a URL of a role that may create databases)
or from a throwaway cluster this session starts with initdb/pg_ctl: one per xdist
worker, on a unix socket in its own directory and 127.0.0.1 on a free port, fsync off.
The server refuses to run as root, so as root it runs as the ``postgres`` user. Each
test gets a database of its own: most get a copy of one migrated once per session (a
template database on PostgreSQL, a file on SQLite), since migrating costs more than
most tests; the schema tests get an empty one. When no PostgreSQL can be had the PostgreSQL tests
skip, except in CI (CI set), where they fail: a suite that silently tested only SQLite
would hide exactly the bugs it exists to catch.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from capataz.models import utcnow
from capataz.store import Store, create_engine_for, upgrade


class Clock:
    """A clock the tests move by hand, so leases expire without sleeping. Each reading
    ticks one microsecond, like a real clock between two calls, so that creation order
    is still order in time."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: str) -> str:
    """The session's PostgreSQL (tests/conftest.py starts one per worker)."""
    return pg_server


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _create_database(admin_url: str, template: str | None = None) -> str:
    name = f"capataz_test_{uuid.uuid4().hex[:12]}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def _drop_database(admin_url: str, name: str) -> None:
    with _admin(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_of(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def _migrate(url: str) -> None:
    engine = create_engine_for(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = _create_database(pg_admin_url)
    yield _url_of(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head once per session, copied for each test."""
    name = _create_database(pg_admin_url)
    _migrate(_url_of(pg_admin_url, name))
    yield name
    _drop_database(pg_admin_url, name)


@pytest.fixture
def migrated_pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh database for one test, already migrated to head."""
    name = _create_database(pg_admin_url, template=pg_template)
    yield _url_of(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "capataz.db"
    _migrate(f"sqlite:///{path}")  # closing the last connection folds the WAL back in
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine, for the tests of migrating itself."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'capataz.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "capataz.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db_url: str, clock: Clock) -> Iterator[Store]:
    opened = Store.open(db_url, clock=clock)
    yield opened
    opened.close()
