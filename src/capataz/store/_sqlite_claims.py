"""Claiming on SQLite through the raw sqlite3 connection: the hot path of a queue.

SQLite runs a claim's statements in a few microseconds each; executing them through
SQLAlchemy (statement caching, parameter processing, result wrapping, events) costs
several times that, and even a pool checkout costs as much as a statement. So on SQLite
``store.leases.claim`` runs this module's fixed SQL on a DBAPI connection that each thread
keeps (:class:`ClaimConnections`): ``BEGIN IMMEDIATE``; one ``UPDATE … RETURNING`` that picks and
leases the task; the run row; the audit entry; ``COMMIT``. It is the same transaction,
with the same effects, as the SQLAlchemy statement of ``_lease_sql.claim_statement`` (which
PostgreSQL uses), and values are stored in the format SQLAlchemy reads back (UTC
timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as text, booleans as 0/1). The test
suite runs every claim test against it and checks the audit chain after concurrent
claims. Errors surface as they do through SQLAlchemy (``_outage.dbapi_error``): a busy
database as StoreUnavailable, anything else as a DBAPIError subclass.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.engine import Engine

from capataz.events import EventType
from capataz.store import _outage
from capataz.store._audit_sql import GENESIS, canonical, entry_hash
from capataz.store._event_sql import SQLITE_INSERT as _EVENT
from capataz.store.records import ClaimedTask
from capataz.units import Budget

__all__ = ["ClaimConnections", "claim", "sqlite_time"]

# The state names are TaskState.READY/RUNNING/ESCALATED and RunStatus.RUNNING (a
# contract; a test checks this text against them).
_CLAIM_TEMPLATE = (
    "UPDATE tasks SET status = 'running', attempts = attempts + 1,"
    " fencing_token = fencing_token + 1, lease_owner = ?, lease_expires_at = ?,"
    " updated_at = ?, reason = NULL"
    " WHERE id = (SELECT id FROM tasks WHERE status = 'ready' AND run_after <= ?/*labels*/"
    " ORDER BY priority DESC, created_at LIMIT 1)"
    " RETURNING id, title, instruction, agent, labels, allow_high, base_commit,"
    " attempts, max_attempts, fencing_token, budget, idempotency_key"
)
# Every label of the task is among the runner's (a JSON array parameter).
_LABELS_FIT = (
    " AND NOT EXISTS (SELECT 1 FROM json_each(tasks.labels) AS l"
    " WHERE l.value NOT IN (SELECT value FROM json_each(?)))"
)
_CLAIM = {
    False: _CLAIM_TEMPLATE.replace("/*labels*/", ""),
    True: _CLAIM_TEMPLATE.replace("/*labels*/", _LABELS_FIT),
}
_RUN = (
    "INSERT INTO runs (id, task_id, attempt, runner_id, fencing_token, status, started_at,"
    " claim_key) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)"
)
# A claim retried with the key of an earlier claim whose answer was lost: that claim's
# task, if this runner still holds it under that run's lease (see Leases.claim).
_REPLAY = (
    "SELECT t.id, t.title, t.instruction, t.agent, t.labels, t.allow_high, t.base_commit,"
    " t.attempts, t.max_attempts, t.fencing_token, t.budget, t.idempotency_key, r.id"
    " FROM runs AS r"
    " JOIN tasks AS t ON t.id = r.task_id"
    " WHERE r.claim_key = ? AND r.runner_id = ? AND t.fencing_token = r.fencing_token"
    " AND t.lease_owner = r.runner_id"
    " AND t.status IN ('running', 'escalated')"
)
_EXTEND = "UPDATE tasks SET lease_expires_at = ? WHERE id = ?"
_TAIL = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
_AUDIT = (
    "INSERT INTO audit (seq, at, actor, action, subject, payload, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ACTION = "task.claimed"


def sqlite_time(value: datetime) -> str:
    """``value`` as SQLAlchemy's SQLite DATETIME stores it, in UTC (see UTCDateTime)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: capataz stores only aware UTC times")
    u = value.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}"
    )


class _Held:
    __slots__ = ("__weakref__", "db", "generation")

    def __init__(self, db: sqlite3.Connection, generation: int) -> None:
        self.db = db
        self.generation = generation


class ClaimConnections:
    """One sqlite3 connection per claiming thread, taken from the engine once (so it is
    set up like every other: WAL, busy timeout, capataz's transaction control) and then
    kept out of the pool. A thread's connection closes when the thread ends or the
    store closes. An in-memory database lives in its one pooled connection, so there
    each claim borrows that connection from the pool instead."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.url = engine.url  # named in a StoreUnavailable
        self._local = threading.local()
        self._live: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._generation = 0
        self._borrow = engine.url.database in (None, "", ":memory:")

    def get(self) -> sqlite3.Connection:
        """This thread's connection; hand it back with :meth:`put`."""
        if self._borrow:
            raw = self._engine.raw_connection()
            self._local.borrowed = raw
            return cast(sqlite3.Connection, raw.driver_connection)
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.generation != self._generation:
            raw = self._engine.raw_connection()
            db = cast(sqlite3.Connection, raw.driver_connection)
            raw.detach()
            held = _Held(db, self._generation)
            with self._lock:
                self._live.add(held)
            self._local.held = held
        return held.db

    def put(self) -> None:
        if self._borrow:
            raw, self._local.borrowed = self._local.borrowed, None
            if raw is not None:
                raw.close()

    def discard(self) -> None:
        """Close this thread's connection: an error left it in an unknown state."""
        if self._borrow:
            raw, self._local.borrowed = self._local.borrowed, None
            if raw is not None:
                raw.invalidate()
            return
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            with self._lock:
                self._live.discard(held)
            with contextlib.suppress(sqlite3.Error):
                held.db.close()

    def close(self) -> None:
        with self._lock:
            self._generation += 1
            for held in list(self._live):
                with contextlib.suppress(sqlite3.Error):
                    held.db.close()
            self._live.clear()


def claim(
    connections: ClaimConnections,
    runner_id: str,
    *,
    now: datetime,
    expires: datetime,
    labels: Sequence[str] | None,
    run_id: str,
    claim_key: str | None = None,
) -> ClaimedTask | None:
    """Lease the most urgent due task to ``runner_id`` in one transaction (see the
    module's docstring), or return None when nothing is due. With ``claim_key``, a task
    this runner already holds under a run claimed with that key is returned again (its
    lease renewed) instead."""
    at = sqlite_time(now)
    params: tuple[Any, ...] = (runner_id, sqlite_time(expires), at, at)
    if labels is not None:
        params = (*params, json.dumps(sorted(set(labels))))
    db = connections.get()
    try:
        leased = _lease(
            db,
            connections,
            _CLAIM[labels is not None],
            params,
            now=now,
            run_id=run_id,
            claim_key=claim_key,
        )
    finally:
        connections.put()
    if leased is None:
        return None
    row, run_id = leased
    return ClaimedTask(
        id=row[0],
        run_id=run_id,
        title=row[1],
        instruction=row[2],
        agent=row[3],
        labels=tuple(json.loads(row[4])),
        allow_high=bool(row[5]),
        base_commit=row[6],
        attempt=row[7],
        max_attempts=row[8],
        fencing_token=row[9],
        lease_expires_at=expires,
        budget=Budget.from_json(json.loads(row[10]) if row[10] is not None else None),
        idempotency_key=row[11],
    )


def _lease(
    db: sqlite3.Connection,
    connections: ClaimConnections,
    statement: str,
    params: tuple[Any, ...],
    *,
    now: datetime,
    run_id: str,
    claim_key: str | None,
) -> tuple[Any, str] | None:
    """The claim's transaction; the leased task's row and its run id, or None."""
    runner_id, expires, at = params[0], params[1], params[2]
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        connections.discard()
        raise _wrapped("BEGIN IMMEDIATE", (), exc, connections) from exc
    try:
        if claim_key is not None:
            replayed = db.execute(_REPLAY, (claim_key, runner_id)).fetchone()
            if replayed is not None:
                db.execute(_EXTEND, (expires, replayed[0]))
                db.execute("COMMIT")
                return replayed[:12], replayed[12]
        row = db.execute(statement, params).fetchone()
        if row is None:
            db.execute("COMMIT")
            return None
        task_id, attempt, token = row[0], row[7], row[9]
        statement, params = _RUN, (run_id, task_id, attempt, runner_id, token, at, claim_key)
        db.execute(statement, params)
        tail = db.execute(_TAIL).fetchone()
        seq, prev_hash = (tail[0] + 1, tail[1]) if tail else (1, GENESIS)
        payload = {"attempt": attempt, "run_id": run_id, "token": token}
        digest = entry_hash(
            seq=seq,
            at=now,
            actor=runner_id,
            action=_ACTION,
            subject=task_id,
            payload=payload,
            prev_hash=prev_hash,
        )
        statement = _AUDIT
        params = (seq, at, runner_id, _ACTION, task_id, canonical(payload), prev_hash, digest)
        db.execute(statement, params)
        statement = _EVENT
        for kind, data in (
            (EventType.TASK_STATE, {"status": "running", "was": "ready", "reason": None}),
            (EventType.RUN_STARTED, {"runner_id": runner_id, "attempt": attempt}),
        ):
            params = (at, kind.value, task_id, run_id, canonical(data))
            db.execute(statement, params)
        statement, params = "COMMIT", ()
        db.execute(statement)
    except BaseException as exc:
        _rollback(connections, db)
        if isinstance(exc, sqlite3.Error):
            raise _wrapped(statement, params, exc, connections) from exc
        raise
    return row, run_id


def _rollback(connections: ClaimConnections, db: sqlite3.Connection) -> None:
    if not db.in_transaction:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        connections.discard()  # never reuse a connection in an unknown state


def _wrapped(
    statement: str, params: tuple[Any, ...], exc: sqlite3.Error, connections: ClaimConnections
) -> Exception:
    return _outage.dbapi_error(statement, params, exc, connections.url)
