"""Claiming on PostgreSQL in one statement: the hot path of a queue.

A claim changes four tables: the task is leased, its run opened, the claim audited and
told to the event stream. Written statement by statement inside a transaction that is
BEGIN, five statements and COMMIT: seven round trips to the server, each costing the
runner's Python and the server's CPU. Here the whole claim is one statement of
data-modifying CTEs, run outside an explicit transaction (PostgreSQL commits it as
one): one round trip. PostgreSQL runs every data-modifying CTE exactly once and to
completion whether or not the outer query reads it, and all of them see the same
snapshot, so the run, the audit entry and the events exist exactly when the task was
leased.

The event stream's ordering lock (``_event_sql``) must be taken before an event's id is
drawn: the events are inserted from a join with the CTE that takes the lock (and sends
the hub's NOTIFY), so no event row exists before that CTE has produced its row. The
lock is released at the statement's commit, microseconds later.

The values written are those of the statement-by-statement path (``_leases._tell_lease``):
the same audit action and payload, the same event types and data (the runner's id
redacted as ``redact_data`` would), so readers cannot tell the paths apart; the claim
tests run on PostgreSQL through this path.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from capataz.events import EventType
from capataz.store import _event_sql
from capataz.store.schema import UTCDateTime
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["claim_statement"]

_CLAIM = """
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = :ready AND run_after <= :now {labels}
    ORDER BY priority DESC, created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE tasks SET
        status = :running, attempts = tasks.attempts + 1,
        fencing_token = tasks.fencing_token + 1, lease_owner = :runner_id,
        lease_expires_at = :expires, updated_at = :now, reason = NULL
    FROM picked WHERE tasks.id = picked.id
    RETURNING tasks.id, tasks.title, tasks.instruction, tasks.agent, tasks.labels,
        tasks.allow_high, tasks.base_commit, tasks.attempts, tasks.max_attempts,
        tasks.fencing_token, tasks.budget, tasks.idempotency_key
), opened AS (
    INSERT INTO runs (id, task_id, attempt, runner_id, fencing_token, status, started_at,
        claim_key)
    SELECT :run_id, id, attempts, :runner_id, fencing_token, :run_running, :now, :claim_key
    FROM leased
), audited AS (
    INSERT INTO audit_pending (at, actor, action, subject, payload)
    SELECT :now, :runner_id, 'task.claimed', id,
        json_build_object('attempt', attempts, 'run_id', CAST(:run_id AS text),
            'token', fencing_token)
    FROM leased
), {ordered}, told AS (
    INSERT INTO events (at, type, task_id, run_id, data)
    SELECT :now, told.type, leased.id, :run_id, told.data
    FROM leased CROSS JOIN ordered CROSS JOIN LATERAL (VALUES
        (CAST(:task_state AS text), json_build_object('reason', NULL,
            'status', CAST(:running AS text), 'was', CAST(:ready AS text))),
        (CAST(:run_started AS text), json_build_object('attempt', leased.attempts,
            'runner_id', CAST(:told_runner AS text)))
    ) AS told(type, data)
)
SELECT * FROM leased
"""
_LABELS_FIT = (
    "AND NOT EXISTS (SELECT 1 FROM json_array_elements_text(tasks.labels) AS l(value)"
    " WHERE l.value NOT IN :runner_labels)"
)
_FIXED = {
    "ready": TaskState.READY.value,
    "running": TaskState.RUNNING.value,
    "run_running": RunStatus.RUNNING.value,
    "task_state": EventType.TASK_STATE.value,
    "run_started": EventType.RUN_STARTED.value,
}
_STATEMENTS: dict[bool, sa.TextClause] = {}


def claim_statement(*, labels: bool) -> sa.TextClause:
    """The one-statement claim; parameters ``now``, ``expires``, ``runner_id``,
    ``told_runner`` (the runner's id as the event stream may show it), ``run_id``,
    ``claim_key`` (and ``runner_labels``) with :func:`fixed_parameters`. Built once per
    variant."""
    if labels not in _STATEMENTS:
        text = _CLAIM.format(
            labels=_LABELS_FIT if labels else "", ordered=_event_sql.ordering_cte("leased")
        )
        binds = [
            sa.bindparam("now", type_=UTCDateTime()),
            sa.bindparam("expires", type_=UTCDateTime()),
        ]
        if labels:
            binds.append(sa.bindparam("runner_labels", expanding=True))
        _STATEMENTS[labels] = sa.text(text).bindparams(*binds)
    return _STATEMENTS[labels]


def fixed_parameters() -> dict[str, Any]:
    """The statement's parameters that never change (state and event names)."""
    return dict(_FIXED)
