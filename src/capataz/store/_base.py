"""What every facade of :class:`capataz.store.manager.Store` shares, and the base they
build on.

The Store is split into facades, one per area (``store.tasks``, ``store.leases``,
``store.runners``, ``store.runs``, ``store.escalations``, ``store.tokens``,
``store.secrets``, ``store.context``, ``store.events``, ``store.audit``), so that no
class grows dozens of methods. They must still behave as one store: the same engine and
clock, the same wake-ups, the same audit chain. So the Store makes one :class:`Shared`
and hands it to each facade; a facade subclasses :class:`StoreBase`, which reads
everything through it (the clock at call time, so a test's clock is every facade's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.events import EventType
from capataz.store import _audit_sql, _event_sql, _tail
from capataz.store._sqlite_claims import ClaimConnections
from capataz.store._wakeup import EVENTS_CHANNEL, ReadyListener
from capataz.store.engine import READ_ONLY
from capataz.store.errors import NoSuchTaskError

__all__ = ["Shared", "StoreBase", "no_task"]


def no_task(task_id: str) -> NoSuchTaskError:
    return NoSuchTaskError(f"no task {task_id}", fix="`capataz task list` shows the task ids")


class Shared:
    """One database as all the facades of a Store see it: the engine, the clock, which
    dialect it speaks, and the per-dialect helpers that must exist once per store (the
    LISTEN connection on PostgreSQL, the claiming threads' sqlite3 connections on
    SQLite)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"
        self.listener = ReadyListener(engine.url) if self.postgres else None
        # Opened only by a server's event hub, on its first wait.
        self.events_listener = ReadyListener(engine.url, EVENTS_CHANNEL) if self.postgres else None
        self.claim_connections = None if self.postgres else ClaimConnections(engine)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.events_listener is not None:
            self.events_listener.close()
        if self.claim_connections is not None:
            self.claim_connections.close()
        self.engine.dispose()


class StoreBase:
    """A facade over :class:`Shared`: short transactions, audit appends, events and
    wake-up notifications, written once here so every area writes them alike."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    @property
    def _postgres(self) -> bool:
        return self._shared.postgres

    def _now(self) -> datetime:
        return self._shared.clock()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction whose audit entries, events and wake-ups are written
        together at its end (``_tail``), right before the commit."""
        with self._shared.engine.begin() as conn:
            with _tail.collecting(conn) as tail:
                yield conn
            _write_tail(conn, tail)

    @contextmanager
    def _single_statement(self) -> Iterator[sa.Connection]:
        """A connection on which each statement commits by itself (PostgreSQL's
        autocommit): for a write that is one statement, it saves the BEGIN and COMMIT
        round trips. The statement must be the whole change (``_pg_claims``)."""
        with self._shared.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._shared.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    @contextmanager
    def _long_read(self) -> Iterator[sa.Connection]:
        """A read whose transaction stays open while the caller consumes rows at its own
        pace (a streamed export piped into a pager). On PostgreSQL it lifts the session
        timeouts of engine.py for this transaction only: they exist so that a frozen
        writer cannot hold locks others wait for, and a read holds none they wait for."""
        with self._read() as conn:
            if self._postgres:
                conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            yield conn

    def _audit(
        self, conn: sa.Connection, actor: str, action: str, subject: str, **payload: Any
    ) -> None:
        _audit_sql.append(
            conn, at=self._now(), actor=actor, action=action, subject=subject, payload=payload
        )

    def _event(
        self,
        conn: sa.Connection,
        kind: EventType,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        **data: Any,
    ) -> None:
        """Append to the live event stream in this transaction (see ``_event_sql``)."""
        _event_sql.emit(conn, kind, at=self._now(), task_id=task_id, run_id=run_id, **data)

    def _notify_ready(self, conn: sa.Connection) -> None:
        """Wake idle runners when this transaction commits (PostgreSQL only; on SQLite
        runners poll). Call it in every transaction that makes a task ready."""
        if not self._postgres:
            return
        tail = _tail.tail_of(conn)
        if tail is not None:
            tail.ready = True
        else:
            conn.execute(_event_sql.pg_preamble(events=False, ready=True))


def _write_tail(conn: sa.Connection, tail: _tail.Tail) -> None:
    """Audit entries first (no lock), then the ordering lock with the notifications,
    then the events: the lock is held only for the last insert and the commit."""
    if tail.audit_rows:
        _audit_sql.write_rows(conn, tail.audit_rows)
    if conn.dialect.name == "postgresql" and (tail.has_events or tail.ready):
        conn.execute(_event_sql.pg_preamble(events=tail.has_events, ready=tail.ready))
    if tail.event_rows:
        _event_sql.write_rows(conn, tail.event_rows)
    for insert in tail.run_events:
        conn.execute(insert)
