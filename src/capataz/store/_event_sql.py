"""Writing and reading the live event stream (see :mod:`capataz.events`).

Events are inserted in the transaction of the change they describe, with the others of
that transaction, at its end (``_tail``). For ids to grow in commit order (so that
"every event after id N" never skips one that commits late), the insert on PostgreSQL
first takes a transaction-scoped advisory lock (``PG_LOCK``; the audit chain took it too
until it moved to sealing, docs/audit.md). Writers that emit events still queue on it,
but only for that last insert and the commit; SQLite's writers are serial already. On
PostgreSQL the transaction also notifies ``EVENTS_CHANNEL`` (delivered at commit, one
per transaction however many events), which wakes the server's event hub at once
instead of at its next tick; the notification is a hint, the table stays the truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from capataz.events import EventRecord, EventType
from capataz.redaction import redact_data
from capataz.store._audit_sql import EVENT_ORDER_KEY, PG_LOCK
from capataz.store._tail import tail_of
from capataz.store._wakeup import EVENTS_CHANNEL, READY_CHANNEL
from capataz.store.schema import UTCDateTime, events, runs

__all__ = [
    "SQLITE_INSERT",
    "emit",
    "emit_for_run",
    "emit_many",
    "last_id",
    "ordering_cte",
    "pg_preamble",
    "prune",
    "read_after",
    "write_rows",
]

# The raw-connection claim path (``_sqlite_claims``) inserts with this statement.
SQLITE_INSERT = "INSERT INTO events (at, type, task_id, run_id, data) VALUES (?, ?, ?, ?, ?)"
# The ordering lock and the notifications, in one round trip (NOTIFY is sent at commit).
_NOTIFY_EVENTS = sa.func.pg_notify(EVENTS_CHANNEL, "").label("events")
_NOTIFY_READY = sa.func.pg_notify(READY_CHANNEL, "").label("ready")
_PREAMBLES = {
    (True, True): sa.select(*PG_LOCK.selected_columns, _NOTIFY_EVENTS, _NOTIFY_READY),
    (True, False): sa.select(*PG_LOCK.selected_columns, _NOTIFY_EVENTS),
    (False, True): sa.select(_NOTIFY_READY),
}
_INSERT = events.insert()


def ordering_cte(source: str) -> str:
    """SQL of a CTE ``ordered`` for a one-statement write (``_pg_claims``,
    ``_pg_reports``): it takes the ordering lock and sends the hub's NOTIFY, once per row
    of the CTE ``source``. The statement inserts its events from a join with it, so no
    event id is drawn before the lock is held."""
    lock = f"pg_advisory_xact_lock({EVENT_ORDER_KEY}) AS locked"
    notify = f"pg_notify('{EVENTS_CHANNEL}', '') AS notified"
    return f"ordered AS (SELECT {lock}, {notify} FROM {source})"  # noqa: S608 - constants


def pg_preamble(*, events: bool, ready: bool) -> sa.Select[Any]:
    """PostgreSQL, once per transaction right before its events are inserted: the
    ordering lock and the event hub's wake-up when it wrote events (``events``), and
    the idle runners' wake-up when it made a task ready (``ready``)."""
    return _PREAMBLES[(events, ready)]


def emit(
    conn: sa.Connection,
    kind: EventType,
    *,
    at: datetime,
    task_id: str | None = None,
    run_id: str | None = None,
    **data: Any,
) -> None:
    row = {"at": at, "type": kind.value, "task_id": task_id, "run_id": run_id}
    _add(conn, [{**row, "data": redact_data(data)}])


def emit_for_run(
    conn: sa.Connection, kind: EventType, *, at: datetime, run_id: str, **data: Any
) -> None:
    """An event about run ``run_id``, tagged with the run's task (one INSERT … SELECT;
    nothing is written when there is no such run)."""
    chosen = sa.select(
        sa.literal(at, UTCDateTime()),
        sa.literal(kind.value, sa.Text()),
        runs.c.task_id,
        runs.c.id,
        sa.literal(redact_data(data), sa.JSON()),
    ).where(runs.c.id == run_id)
    insert = sa.insert(events).from_select(["at", "type", "task_id", "run_id", "data"], chosen)
    tail = tail_of(conn)
    if tail is not None:
        tail.run_events.append(insert)
        return
    _lock(conn)
    conn.execute(insert)


def emit_many(
    conn: sa.Connection,
    kind: EventType,
    *,
    at: datetime,
    items: list[tuple[str | None, dict[str, Any]]],
) -> None:
    """One event of ``kind`` per (task_id, data) item."""
    rows = [
        {
            "at": at,
            "type": kind.value,
            "task_id": task_id,
            "run_id": None,
            "data": redact_data(data),
        }
        for task_id, data in items
    ]
    if rows:
        _add(conn, rows)


def _add(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Into the transaction's tail when it collects one (``_tail``), else at once."""
    tail = tail_of(conn)
    if tail is not None:
        tail.event_rows.extend(rows)
        return
    _lock(conn)
    write_rows(conn, rows)


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(pg_preamble(events=True, ready=False))


def write_rows(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert events in order, in one statement; on PostgreSQL the caller holds the
    ordering lock already (:func:`pg_preamble`)."""
    conn.execute(_INSERT, rows)


def read_after(
    conn: sa.Connection,
    after: int,
    *,
    task_id: str | None = None,
    run_id: str | None = None,
    types: frozenset[str] | None = None,
    limit: int = 500,
) -> list[EventRecord]:
    query = sa.select(events).where(events.c.id > after)
    if task_id is not None:
        query = query.where(events.c.task_id == task_id)
    if run_id is not None:
        query = query.where(events.c.run_id == run_id)
    if types:
        query = query.where(events.c.type.in_(sorted(types)))
    rows = conn.execute(query.order_by(events.c.id).limit(limit)).all()
    return [
        EventRecord(
            id=row.id,
            type=row.type,
            at=row.at,
            task_id=row.task_id,
            run_id=row.run_id,
            data=row.data,
        )
        for row in rows
    ]


def last_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))).scalar_one())


def prune(conn: sa.Connection, before: datetime) -> int:
    return conn.execute(sa.delete(events).where(events.c.at < before)).rowcount
