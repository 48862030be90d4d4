"""Reporting a task done on PostgreSQL in one statement: the other half of the hot path.

The general ``Leases.complete`` reads the task under a lock, decides, and then writes
the task, the run, the escalations, the audit entry and the events statement by
statement: eight round trips before the commit. "Done" by the lease's holder is what a
healthy queue reports almost every time, and it needs no decision in Python (no retry,
no cascade), so here it is one statement of data-modifying CTEs. When the statement
matches nothing (the lease is not the caller's, or this is a retry of a report that
landed) it changes nothing and the general path runs and says why, as before.

The statement also locks the task's waiting dependents (``waiting``) and returns how
many there are; the caller then releases them in a second statement of the same
transaction (``_task_sql.release_dependents``), which sees any sibling dependency that
finished at the same moment (see ``_task_sql.release_or_cascade``).

It writes exactly what the general path writes for the same report: the same columns,
the same audit action and payload, the same events in the same order (the ordering lock
taken, as ``_event_sql`` requires, before the first event's id is drawn); the store's
tests run every completion on PostgreSQL through it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from capataz.events import EventType
from capataz.redaction import redact
from capataz.store import _event_sql, _run_sql, _task_sql
from capataz.store.records import RunDetails
from capataz.store.schema import UTCDateTime
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["DONE", "report_done"]

_DONE = """
WITH holder AS (
    SELECT id, status, attempts, lease_owner FROM tasks
    WHERE id = :task_id AND fencing_token = :token AND status IN (:running, :escalated)
        AND lease_owner IS NOT NULL
    FOR UPDATE
), ended AS (
    UPDATE tasks SET status = :done, reason = :reason, updated_at = :now,
        lease_owner = NULL, lease_expires_at = NULL
    FROM holder WHERE tasks.id = holder.id
    RETURNING tasks.id, holder.status AS was, holder.attempts, holder.lease_owner
), closed_run AS (
    UPDATE runs SET status = :finished, ended_at = :now, reason = :reason,
        outcome = :done, decision = :decision
    FROM ended WHERE runs.task_id = ended.id AND runs.fencing_token = :token
    RETURNING runs.id
), closed_escalations AS (
    UPDATE escalations SET closed_at = :now
    FROM ended
    WHERE escalations.task_id = ended.id AND ended.was = :escalated
        AND escalations.closed_at IS NULL
), waiting AS (
    SELECT id FROM tasks
    WHERE status = :pending AND EXISTS (SELECT 1 FROM ended)
        AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on_id = :task_id)
    ORDER BY id
    FOR UPDATE
), audited AS (
    INSERT INTO audit_pending (at, actor, action, subject, payload)
    SELECT :now, COALESCE(CAST(:actor AS text), ended.lease_owner, 'runner'), 'task.done',
        ended.id, json_build_object('attempt', ended.attempts,
            'decision', CAST(:told_decision AS text), 'reason', CAST(:reason AS text),
            'run_after', NULL)
    FROM ended
), {ordered}, told AS (
    INSERT INTO events (at, type, task_id, run_id, data)
    SELECT :now, told.type, ended.id, closed_run.id, told.data
    FROM ended CROSS JOIN ordered LEFT JOIN closed_run ON true
    CROSS JOIN LATERAL (VALUES
        (1, CAST(:task_state AS text), json_build_object('reason', CAST(:reason AS text),
            'status', CAST(:done AS text), 'was', ended.was)),
        (2, CAST(:run_finished AS text), json_build_object(
            'decision', CAST(:told_decision AS text), 'outcome', CAST(:done AS text),
            'reason', CAST(:reason AS text), 'result', CAST(:result AS text),
            'status', CAST(:finished AS text))),
        (3, CAST(:decision_type AS text), json_build_object(
            'decision', CAST(:told_decision AS text), 'reason', CAST(:reason AS text)))
    ) AS told(n, type, data)
    WHERE (told.n <> 2 OR closed_run.id IS NOT NULL)
        AND (told.n <> 3 OR CAST(:told_decision AS text) IS NOT NULL)
    ORDER BY told.n
)
SELECT ended.id, ended.lease_owner, closed_run.id AS run_id,
    (SELECT count(*) FROM waiting) AS waiting
FROM ended LEFT JOIN closed_run ON true
"""

DONE = sa.text(_DONE.format(ordered=_event_sql.ordering_cte("ended"))).bindparams(
    sa.bindparam("now", type_=UTCDateTime())
)
_FIXED = {
    "running": TaskState.RUNNING.value,
    "escalated": TaskState.ESCALATED.value,
    "pending": TaskState.PENDING.value,
    "done": TaskState.DONE.value,
    "finished": RunStatus.FINISHED.value,
    "task_state": EventType.TASK_STATE.value,
    "run_finished": EventType.RUN_FINISHED.value,
    "decision_type": EventType.DECISION.value,
}


def report_done(
    conn: sa.Connection,
    ending: tuple[str, int, datetime, str | None],
    told: tuple[str | None, str | None],
    *,
    details: RunDetails | None,
    rows: _run_sql.DetailRows | None,
) -> list[str] | None:
    """In the caller's transaction: the task ``ending`` names (id, fencing token, now,
    redacted reason) is done, by :data:`DONE`, then the run's details and the release
    of the waiting dependents. ``told`` is the decision and the actor. Returns the
    dependents made ready, or None (nothing written) when the lease is not the
    caller's."""
    task_id, fencing_token, now, reason = ending
    decision, actor = told
    params = {
        **_FIXED,
        "task_id": task_id,
        "token": fencing_token,
        "now": now,
        "reason": reason,
        "decision": decision,
        "told_decision": redact(decision) if decision else decision,
        "actor": actor,
        "result": redact(details.outcome) if details and details.outcome else None,
    }
    row = conn.execute(DONE, params).first()
    if row is None:
        return None
    if details is not None and rows is not None and row.run_id is not None:
        _run_sql.record_details(conn, row.run_id, details, rows)
    if not row.waiting:
        return []
    return _task_sql.release_dependents(conn, task_id, now, actor or row.lease_owner or "runner")
