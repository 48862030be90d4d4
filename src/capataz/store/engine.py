"""Opening the database: which URL, and the connection settings that make SQLite safe
for many writers.

SQLite's default (deferred) transactions take the write lock only at the first write;
when two connections both read and then try to write, one gets SQLITE_BUSY at once,
whatever the busy timeout ("database is locked"). Starting every write transaction with
``BEGIN IMMEDIATE`` takes the lock up front, where the busy timeout does apply, so
writers queue instead of failing. pysqlite's own transaction handling would emit a plain
``BEGIN`` behind our back, so it is switched off and SQLAlchemy's ``begin`` event emits
ours (the recipe of SQLAlchemy's pysqlite documentation).

On PostgreSQL a process that freezes inside a transaction (SIGSTOP, a debugger, a VM
paused, a laptop lid) keeps its row locks, and every writer that needs those rows
waits behind it for as long as it stays frozen. So every connection capataz opens sets
three session timeouts (:data:`PG_SESSION_TIMEOUTS`):

* ``lock_timeout`` (5 s): a statement waiting that long for a lock gives up
  (``LockNotAvailable``) instead of queueing behind the frozen process;
* ``idle_in_transaction_session_timeout`` (10 s): the server ends a session that sits
  in an open transaction doing nothing, which releases the frozen process's locks;
* ``statement_timeout`` (30 s): no statement of capataz's short transactions runs that
  long; one that does is stuck, not busy.

``_outage`` turns all three errors into :class:`StoreUnavailable`, which runners retry,
so the waiting writer gets through once the frozen session is gone. They are set by
one statement when the pool opens a connection; a setting the URL's libpq options
already give (``?options=-c lock_timeout=20s``) is left as the URL says: that is the
override.
Migrations lift the lock and statement timeouts for their own transaction (migrate.py).
The LISTEN connection of ``_wakeup`` is in autocommit mode: idle, never idle *in a
transaction*, so the idle timeout does not touch it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from capataz.statedir import private_file, state_dir
from capataz.store import _outage
from capataz.store.errors import DatabaseUrlError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "PG_SESSION_TIMEOUTS",
    "READ_ONLY",
    "create_engine_for",
    "database_url",
    "pg_settings",
    "redacted_url",
]

ENV_VAR = "CAPATAZ_DATABASE_URL"
BUSY_TIMEOUT_MS = 30_000
# A pooled PostgreSQL connection idle longer than this is pinged before use (engine.py).
PING_AFTER_IDLE = 1.0
_CHECKED_IN = "capataz_checked_in"
WAL_CHECKPOINT_PAGES = 10_000
# Execution option for connections that only read: on SQLite they start a deferred
# transaction and so never wait for, or hold up, a writer.
READ_ONLY = "capataz_read_only"
# Set on every PostgreSQL connection (see the module docstring for why each).
PG_SESSION_TIMEOUTS = {
    "lock_timeout": "5s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "10s",
}

_FIX = (
    "set CAPATAZ_DATABASE_URL to sqlite:///PATH or postgresql://USER@HOST/DB, "
    "or unset it to use .capataz/capataz.db"
)


def database_url(repo_root: Path) -> str:
    """The URL capataz uses for the repository at ``repo_root``: $CAPATAZ_DATABASE_URL,
    else a SQLite file under ``.capataz/`` (created on first use)."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return normalise_url(configured)
    path = state_dir(repo_root) / "capataz.db"
    return f"sqlite:///{path}"


def normalise_url(url: str) -> str:
    """Map the URL forms people copy from elsewhere onto the drivers capataz ships:
    ``postgres://`` and ``postgresql://`` mean psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _parse(url: str) -> URL:
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise DatabaseUrlError(f"not a database URL: {_redact(url)!r}", fix=_FIX) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(
            f"capataz supports SQLite and PostgreSQL, not {parsed.get_backend_name()!r}",
            fix=_FIX,
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise DatabaseUrlError(
            f"driver {parsed.get_driver_name()!r} is not installed with capataz", fix=_FIX
        )
    return parsed


def redacted_url(url: str) -> str:
    """``url`` fit for a message or a log: never with its password."""
    return _redact(url)


def _redact(url: str) -> str:
    """Never print a password from a URL into an error message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1] if "@" in url else url


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``url`` with capataz's connection settings; raises
    :class:`DatabaseUrlError` for a URL capataz cannot use. Its connection failures
    raise :class:`StoreUnavailable` (see ``_outage``)."""
    parsed = _parse(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed, **kwargs)
        else:
            engine = _postgres_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseUrlError(f"cannot use {_redact(url)!r}: {exc}", fix=_FIX) from None
    _outage.install(engine)
    return engine


def pg_settings(url: URL) -> dict[str, str]:
    """The session timeouts capataz sets on connections to ``url``: all of
    :data:`PG_SESSION_TIMEOUTS` but those the URL's libpq ``options`` set itself
    (``-c lock_timeout=20s``), which the server has applied already and which win."""
    given = url.query.get("options", "")
    text = given if isinstance(given, str) else " ".join(given)
    theirs = set(re.findall(r"(?:-c\s*|--)([A-Za-z_.]+)\s*=", text))
    return {name: value for name, value in PG_SESSION_TIMEOUTS.items() if name not in theirs}


def _postgres_engine(url: URL, **kwargs: Any) -> Engine:
    engine = sa.create_engine(url, **kwargs)
    _ping_idle_connections(engine)
    settings = pg_settings(url)
    if not settings:
        return engine
    # One statement, once per new pooled connection. Set after connecting rather than
    # sent as a startup ``options`` parameter, which PgBouncer refuses by default.
    statement = "SELECT " + ", ".join(f"set_config('{name}', %s, false)" for name in settings)
    values = tuple(settings.values())

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(statement, values)
        dbapi_connection.commit()  # set_config in a transaction that rolled back is undone

    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle in the pool for more
    than :data:`PING_AFTER_IDLE` seconds. SQLAlchemy's ``pool_pre_ping`` pings before
    every checkout: one more round trip on every transaction, a fifth of a runner's
    claim→done cycle. A connection checked in moments ago is almost surely alive; if the
    server went away in between, the statement fails as :class:`StoreUnavailable`
    (SQLAlchemy then drops the whole pool) and the caller retries as it does for any
    outage. A dead idle connection is replaced silently (the pool retries the checkout
    when this listener raises ``DisconnectionError``)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in <= PING_AFTER_IDLE:
            return  # just connected, or used moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(str(exc)) from exc
        if not alive:
            raise sa.exc.DisconnectionError("the connection did not answer a ping")


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    connect_args.update(kwargs.pop("connect_args", {}))
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory and url.database and not url.database.startswith("file:"):
        # SQLite gives its -wal and -shm files the database file's mode.
        private_file(Path(url.database))
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" listener below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL is still corruption-safe; only the last commits
                # before a power loss can be lost, never on a process crash.
                cursor.execute("PRAGMA synchronous=NORMAL")
                # A checkpoint costs two fsyncs (milliseconds each on many disks). The
                # default, every 1,000 WAL pages, is every ~100 claims (a claim writes
                # ~9 pages); every 10,000 pages (a WAL of up to ~40 MiB) is every
                # ~1,000, which more than doubles claims/s on such disks. Durability is
                # unchanged: NORMAL never syncs on commit.
                cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
