"""Reporting how a run ended on SQLite through the raw sqlite3 connection.

A runner's cycle is a claim and a report. Claims already run on the raw connection
(``_sqlite_claims``); a report through SQLAlchemy (``Leases.complete``) is about eight
statements, and SQLAlchemy's execution machinery (statement cache lookups, parameter
processing, result wrapping, events, the pool checkout) cost about 1 ms of Python per
report where SQLite's own work is about a third of that. So on SQLite ``complete`` first
tries this module, on the same per-thread connections (:class:`ClaimConnections`).

**Which cases run here.** The common case, fully: the report names one of the endings
(done, failed, blocked, escalated, cancelled) and the runner holds the task (its row is
``running`` or ``escalated`` under ``fencing_token`` with a ``lease_owner``), with or
without ``decision``, ``actor`` and ``details`` (what a pipeline's runner reports). Then,
in one ``BEGIN IMMEDIATE`` transaction, exactly what the SQLAlchemy path writes:

* the task row ended (``Leases._ENDED``): a failed attempt with attempts left goes
  back to ready after ``retry_delay`` (the same method, so the same backoff and jitter),
  otherwise the reported state; the lease cleared (run_after is written only for a
  retry: otherwise the SQLAlchemy path's ``coalesce`` rewrites the value it has, the
  same row for one more index page to write);
* the lease's run ended (``_lease_sql.end_run``: status, ended_at, reason, outcome,
  decision, and with ``details`` the columns of ``_run_sql.detail_values``), and the
  details' file changes, violations and decisions rows (``_run_sql.detail_rows``, the
  same function, so the same checks and masking);
* an escalation the task waited on closed (when it was ``escalated``);
* dependents moved along (``_task_sql.release_or_cascade``): when done, those whose
  dependencies are all done become ready, each audited ``task.ready`` with its
  TASK_STATE event; when failed (finally), blocked or cancelled, the pending dependents,
  transitively, become blocked or cancelled, each audited and told;
* the audit entries, chained after the chain's tail as ``_audit_sql.write_rows`` chains
  them (payloads redacted and JSON-normalised as ``_audit_sql.append`` does), and the
  events as ``_event_sql`` writes them (data through ``redact_data``): TASK_STATE,
  RUN_FINISHED, DECISION (with a decision), then the dependents' TASK_STATE events.

**Which cases do not.** Everything else takes the SQLAlchemy path unchanged, which stays
the reference: a state that is not an ending (refused there with ArgumentRefusedError);
a task that does not exist (NoSuchTaskError there); a runner that does not hold the
lease (the refusal, audited, or the accepted retry of a report whose answer was lost).
For the last two this module reads the row, writes nothing, ends its transaction and
returns False; the SQLAlchemy path then decides in a transaction of its own. Details
that ``detail_rows`` refuses (ArgumentRefusedError) roll the transaction back and raise
the same error that path raises, having written nothing either. A store can be switched to
the SQLAlchemy path for every report (``Leases._sqlite_fast_reports = False``), which
the test comparing both paths does.

**Formats.** Values are stored byte for byte as SQLAlchemy stores them: UTC timestamps
as ``YYYY-MM-DD HH:MM:SS.ffffff`` (``sqlite_time``), JSON as ``json.dumps`` text (the
serializer SQLAlchemy's SQLite dialect uses), the audit ``at`` as the UTC time of the
clock reading. The clock is read as often and in the same order as on the SQLAlchemy
path, so with a test's ticking clock both paths write the same rows; a test runs one
sequence of reports through both and compares every row. Errors surface as on the claim
path (``_outage.dbapi_error``): a busy database as StoreUnavailable, anything else as
a DBAPIError subclass.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from capataz.events import EventType
from capataz.redaction import redact, redact_data
from capataz.store._audit_sql import GENESIS, canonical, entry_hash
from capataz.store._event_sql import SQLITE_INSERT as _EVENT
from capataz.store._run_sql import DetailRows, detail_rows, detail_values
from capataz.store._sqlite_claims import (
    _AUDIT,
    _TAIL,
    ClaimConnections,
    _rollback,
    _wrapped,
    sqlite_time,
)
from capataz.store.records import RunDetails
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["complete"]

_ENDINGS = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.BLOCKED, TaskState.ESCALATED, TaskState.CANCELLED}
)
_LEASED = frozenset({TaskState.RUNNING.value, TaskState.ESCALATED.value})
# What a cascade makes of a dependent (``_task_sql._inherited``).
_CASCADES = {
    TaskState.FAILED: TaskState.BLOCKED,
    TaskState.BLOCKED: TaskState.BLOCKED,
    TaskState.CANCELLED: TaskState.CANCELLED,
}

# ``_lease_sql.lock_task`` (SQLite's write transaction is exclusive already).
_TASK_ROW = (
    "SELECT status, fencing_token, attempts, max_attempts, lease_owner FROM tasks WHERE id = ?"
)
# ``Leases._ENDED``: the lease goes, and a retry waits until the given time. Its
# ``run_after = coalesce(:retry_at, run_after)`` rewrites ix_tasks_run_after's entry
# even when the value stays, one more page for the WAL and the checkpoint in every
# report; so only a retry (_RETRIED) sets run_after here, which leaves the same rows.
_ENDED = (
    "UPDATE tasks SET status = ?, reason = ?, updated_at = ?, lease_owner = NULL,"
    " lease_expires_at = NULL WHERE id = ?"
)
_RETRIED = (
    "UPDATE tasks SET status = ?, reason = ?, updated_at = ?, lease_owner = NULL,"
    " lease_expires_at = NULL, run_after = ? WHERE id = ?"
)
# ``_lease_sql.end_run`` with the columns a report without details sets; with details,
# their columns too (_end_run_sql).
_END_RUN = (
    "UPDATE runs SET status = ?, ended_at = ?, reason = ?, decision = ?, outcome = ?"
    " WHERE task_id = ? AND fencing_token = ? RETURNING id"
)
_END_RUN_WITH: dict[tuple[str, ...], str] = {}
# ``_run_sql.insert_details``: each table's columns, in the order given.
_DETAIL_TABLES = {
    "file_changes": ("path", "kind", "lines_added", "lines_removed", "binary"),
    "violations": (
        "type", "severity", "details", "suggestion", "file", "line", "gate", "phase",
    ),
    "decisions": ("at", "phase", "decision", "reason"),
}  # fmt: skip
_INSERT_DETAIL = {
    table: f"INSERT INTO {table} (run_id, {', '.join(columns)})"  # noqa: S608 - fixed names
    f" VALUES (?{', ?' * len(columns)})"
    for table, columns in _DETAIL_TABLES.items()
}
# ``_lease_sql.close_escalations``.
_CLOSE_ESCALATIONS = "UPDATE escalations SET closed_at = ? WHERE task_id = ? AND closed_at IS NULL"
# ``_task_sql._RELEASE`` and ``_CASCADE``: the pending dependents of a task (the first
# only those whose every dependency is now done).
_RELEASE = (
    "UPDATE tasks SET status = 'ready', reason = NULL, updated_at = ?"
    " WHERE status = 'pending'"
    " AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on_id = ?)"
    " AND NOT EXISTS (SELECT 1 FROM task_dependencies AS other"
    " JOIN tasks AS dep_task ON dep_task.id = other.depends_on_id"
    " WHERE other.task_id = tasks.id AND dep_task.status != 'done')"
    " RETURNING id"
)
_CASCADE = (
    "UPDATE tasks SET status = ?, reason = ?, updated_at = ?"
    " WHERE status = 'pending'"
    " AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on_id = ?)"
    " RETURNING id"
)

# One audit entry before chaining: at, actor, action, subject, payload.
_Entry = tuple[datetime, str, str, str, dict[str, Any]]
# One event: at, type, task_id, run_id, data.
_Event = tuple[datetime, EventType, str | None, str | None, dict[str, Any]]


class _Statement:
    """The statement being run, for the error a failure raises (like SQLAlchemy's)."""

    __slots__ = ("params", "sql")

    def __init__(self) -> None:
        self.sql = "BEGIN IMMEDIATE"
        self.params: tuple[Any, ...] = ()

    def run(self, db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
        self.sql, self.params = sql, params
        return db.execute(sql, params)


def complete(
    connections: ClaimConnections,
    task_id: str,
    fencing_token: int,
    state: TaskState | str,
    reason: str | None,
    *,
    decision: str | None,
    actor: str | None,
    details: RunDetails | None,
    clock: Callable[[], datetime],
    retry_delay: Callable[[int], float],
) -> bool:
    """Record the ending the runner holding ``task_id`` under ``fencing_token``
    reports, in one transaction (see the module's docstring); True when recorded. False
    when this is not the common case: nothing was written, and the caller takes the
    SQLAlchemy path (``Leases.complete``), which refuses, accepts a retry, or raises.
    ``clock`` and ``retry_delay`` are the facade's, read as that path reads them."""
    if state not in _ENDINGS:
        return False
    state = TaskState(state)
    reason = redact(reason) if reason else reason
    db = connections.get()
    try:
        return _report(
            db,
            connections,
            task_id=task_id,
            fencing_token=fencing_token,
            state=state,
            reason=reason,
            decision=decision,
            actor=actor,
            details=details,
            clock=clock,
            retry_delay=retry_delay,
        )
    finally:
        connections.put()


def _report(
    db: sqlite3.Connection,
    connections: ClaimConnections,
    *,
    task_id: str,
    fencing_token: int,
    state: TaskState,
    reason: str | None,
    decision: str | None,
    actor: str | None,
    details: RunDetails | None,
    clock: Callable[[], datetime],
    retry_delay: Callable[[int], float],
) -> bool:
    """The report's transaction; False (rolled back, nothing written) when the runner
    does not hold the task. The clock is first read once the lease is known to be
    held, so a report that falls back reads it only on the SQLAlchemy path."""
    stmt = _Statement()
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        connections.discard()
        raise _wrapped(stmt.sql, stmt.params, exc, connections) from exc
    try:
        current = stmt.run(db, _TASK_ROW, (task_id,)).fetchone()
        if current is None or not _holds(current, fencing_token):
            db.execute("ROLLBACK")
            return False
        now = clock()
        rows = detail_rows(details, now) if details is not None else None
        was, attempts, lease_owner = current[0], current[2], current[4]
        who = actor or lease_owner or "runner"
        final, run_after = state, None
        if state is TaskState.FAILED and attempts < current[3]:
            final = TaskState.READY
            run_after = now + timedelta(seconds=retry_delay(attempts))
        at = sqlite_time(now)
        if run_after is None:
            stmt.run(db, _ENDED, (final.value, reason, at, task_id))
        else:
            retry_at = sqlite_time(run_after)
            stmt.run(db, _RETRIED, (final.value, reason, at, retry_at, task_id))
        ending = (RunStatus.FINISHED.value, at, reason, decision, state.value)
        run_id = _end_run(db, stmt, task_id, fencing_token, ending=ending, details=(details, rows))
        if was == TaskState.ESCALATED.value:
            stmt.run(db, _CLOSE_ESCALATIONS, (at, task_id))
        action = "task.retry" if final is TaskState.READY else f"task.{final}"
        audited = {
            "reason": reason,
            "attempt": attempts,
            "decision": decision,
            "run_after": run_after.isoformat() if run_after else None,
        }
        entries: list[_Entry] = [(clock(), who, action, task_id, audited)]
        events = _told(
            clock,
            task_id=task_id,
            run_id=run_id,
            task_state=(final, was),
            outcome=state,
            reason=reason,
            decision=decision,
            result=details.outcome if details is not None else None,
        )
        _move_dependents(db, stmt, task_id, final, now=now, who=who, entries=entries, events=events)
        _write_audit(db, stmt, entries)
        _write_events(db, stmt, events)
        stmt.sql, stmt.params = "COMMIT", ()
        db.execute("COMMIT")
    except BaseException as exc:
        _rollback(connections, db)
        if isinstance(exc, sqlite3.Error):
            raise _wrapped(stmt.sql, stmt.params, exc, connections) from exc
        raise
    return True


def _told(
    clock: Callable[[], datetime],
    *,
    task_id: str,
    run_id: str | None,
    task_state: tuple[TaskState, str],
    outcome: TaskState,
    reason: str | None,
    decision: str | None,
    result: str | None,
) -> list[_Event]:
    """The events ``Leases._end_lease`` and ``complete`` emit (each at a clock reading
    of its own, as ``StoreBase._event`` reads it): the task's new state (and what it
    was), how its run ended, and the decision."""
    status, was = task_state
    told = {"status": status.value, "was": was, "reason": reason}
    events: list[_Event] = [(clock(), EventType.TASK_STATE, task_id, run_id, told)]
    if run_id is not None:
        finished = {
            "status": RunStatus.FINISHED.value,
            "reason": reason,
            "outcome": outcome.value,
            "result": result,
            "decision": decision,
        }
        events.append((clock(), EventType.RUN_FINISHED, task_id, run_id, finished))
    if decision is not None:
        decided = {"decision": decision, "reason": reason}
        events.append((clock(), EventType.DECISION, task_id, run_id, decided))
    return events


def _end_run(
    db: sqlite3.Connection,
    stmt: _Statement,
    task_id: str,
    fencing_token: int,
    *,
    ending: tuple[Any, ...],
    details: tuple[RunDetails | None, DetailRows | None],
) -> str | None:
    """``_lease_sql.end_run`` (``ending``: status, ended_at, reason, decision, outcome;
    and the details' columns) and ``_run_sql.insert_details``; the run's id."""
    given, rows = details
    if given is None:
        sql, params = _END_RUN, (*ending, task_id, fencing_token)
    else:
        values = detail_values(given)
        sql = _end_run_sql(tuple(values))
        params = (*ending, *values.values(), task_id, fencing_token)
    ended = stmt.run(db, sql, params).fetchone()
    run_id: str | None = ended[0] if ended is not None else None
    if rows is not None and run_id is not None:
        _insert_details(db, stmt, run_id, rows)
    return run_id


def _end_run_sql(columns: tuple[str, ...]) -> str:
    """``_END_RUN`` setting ``columns`` (``detail_values``'s) too; built once per set."""
    sql = _END_RUN_WITH.get(columns)
    if sql is None:
        more = "".join(f", {name} = ?" for name in columns)
        sql = _END_RUN_WITH[columns] = _END_RUN.replace(" WHERE", more + " WHERE", 1)
    return sql


def _insert_details(
    db: sqlite3.Connection, stmt: _Statement, run_id: str, rows: DetailRows
) -> None:
    """``_run_sql.insert_details``: the rows of ``detail_rows``, stored as SQLAlchemy
    stores them (``binary`` as 0/1, a decision's ``at`` as UTC text)."""
    for table, columns in _DETAIL_TABLES.items():
        if not rows[table]:
            continue
        values = [(run_id, *(_stored(row[name]) for name in columns)) for row in rows[table]]
        stmt.sql, stmt.params = _INSERT_DETAIL[table], values[-1]
        db.executemany(_INSERT_DETAIL[table], values)


def _stored(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return sqlite_time(value)
    return value


def _holds(current: Any, fencing_token: int) -> bool:
    """``_lease_sql.holds``: the lease ``fencing_token`` is the task's live lease."""
    return bool(current[0] in _LEASED and current[1] == fencing_token and current[4] is not None)


def _move_dependents(
    db: sqlite3.Connection,
    stmt: _Statement,
    task_id: str,
    final: TaskState,
    *,
    now: datetime,
    who: str,
    entries: list[_Entry],
    events: list[_Event],
) -> None:
    """``_task_sql.release_or_cascade``: its statements, and its audit entries and
    events appended to the transaction's, in the same order."""
    at = sqlite_time(now)
    if final is TaskState.DONE:
        released = sorted(row[0] for row in stmt.run(db, _RELEASE, (at, task_id)).fetchall())
        for tid in released:
            entries.append((now, who, "task.ready", tid, {"after": task_id}))
        ready = {"status": TaskState.READY.value, "was": TaskState.PENDING.value}
        for tid in released:
            events.append((now, EventType.TASK_STATE, tid, None, dict(ready)))
        return
    if final not in _CASCADES:
        return
    frontier: list[tuple[str, TaskState]] = [(task_id, final)]
    while frontier:
        dep, dep_state = frontier.pop()
        target, why = _CASCADES[dep_state], f"dependency {dep} ended {dep_state}"
        params = (target.value, why, at, dep)
        for tid in sorted(row[0] for row in stmt.run(db, _CASCADE, params).fetchall()):
            entries.append((now, who, f"task.{target}", tid, {"reason": why}))
            told = {"status": target.value, "was": TaskState.PENDING.value, "reason": why}
            events.append((now, EventType.TASK_STATE, tid, None, told))
            frontier.append((tid, target))


def _write_audit(db: sqlite3.Connection, stmt: _Statement, entries: list[_Entry]) -> None:
    """``_audit_sql.write_rows`` on SQLite: chained after the chain's tail (this
    transaction holds the write lock, so it is the only writer), each payload redacted
    and normalised as ``_audit_sql.append`` does before it is hashed and stored."""
    tail = stmt.run(db, _TAIL).fetchone()
    seq, prev_hash = (tail[0], tail[1]) if tail else (0, GENESIS)
    rows = []
    for at, actor, action, subject, payload in entries:
        seq += 1
        when = at.astimezone(UTC)
        body = json.loads(canonical(redact_data(payload)))
        digest = entry_hash(
            seq=seq,
            at=when,
            actor=actor,
            action=action,
            subject=subject,
            payload=body,
            prev_hash=prev_hash,
        )
        stored = (seq, sqlite_time(when), actor, action, subject, json.dumps(body))
        rows.append((*stored, prev_hash, digest))
        prev_hash = digest
    stmt.sql, stmt.params = _AUDIT, rows[-1] if rows else ()
    db.executemany(_AUDIT, rows)


def _write_events(db: sqlite3.Connection, stmt: _Statement, events: list[_Event]) -> None:
    """The events in order, their data redacted (``_event_sql.emit``) and stored as
    SQLAlchemy's JSON type stores it."""
    rows = [
        (sqlite_time(at), kind.value, task_id, run_id, json.dumps(redact_data(data)))
        for at, kind, task_id, run_id, data in events
    ]
    stmt.sql, stmt.params = _EVENT, rows[-1] if rows else ()
    db.executemany(_EVENT, rows)
