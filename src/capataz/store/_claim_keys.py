"""SQL for claims a remote runner can retry safely, claims of one named task, and
reports that arrive twice. Private to the store (see ``_leases``).

Over HTTP a request can succeed on the server while its answer is lost (a dropped
connection, a server killed after its commit). The runner then retries, and the retry
must find the first attempt's effect instead of repeating it: a claim carries a
``claim_key`` (stored on its run) and a retried claim with the same key returns the
task already leased under it; a report (complete, release) whose run already ended
the same way is accepted again. On SQLite the hot claim path does the same in raw SQL
(``_sqlite_claims``); these statements serve PostgreSQL and the one-task claim."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from capataz.store import _lease_sql
from capataz.store._base import no_task
from capataz.store.errors import ClaimConflictError
from capataz.store.records import ClaimedTask
from capataz.store.schema import UTCDateTime, runs, task_dependencies, tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["claim_one_statement", "ended_as", "refusal", "replay"]

_CLAIMED = (
    tasks.c.id, tasks.c.title, tasks.c.instruction, tasks.c.agent, tasks.c.labels,
    tasks.c.allow_high, tasks.c.base_commit, tasks.c.attempts, tasks.c.max_attempts,
    tasks.c.fencing_token, tasks.c.budget, tasks.c.idempotency_key,
)  # fmt: skip
_REPLAY = (
    sa.select(runs.c.id.label("run_id"), *_CLAIMED)
    .select_from(runs.join(tasks, tasks.c.id == runs.c.task_id))
    .where(
        runs.c.claim_key == sa.bindparam("claim_key"),
        runs.c.runner_id == sa.bindparam("runner_id"),
        tasks.c.fencing_token == runs.c.fencing_token,
        tasks.c.lease_owner == runs.c.runner_id,
        tasks.c.status.in_(_lease_sql.LEASED),
    )
)


def replay(
    conn: sa.Connection,
    claim_key: str,
    runner_id: str,
    expires: datetime,
    *,
    postgres: bool,
    task_id: str | None = None,
) -> ClaimedTask | None:
    """The task ``runner_id`` still holds under the run it claimed with ``claim_key``,
    its lease renewed to ``expires``; None when there is none (never claimed, or the
    lease is gone: then the caller claims afresh)."""
    query = _REPLAY if task_id is None else _REPLAY.where(tasks.c.id == task_id)
    if postgres:
        query = query.with_for_update(of=tasks)
    row = conn.execute(query, {"claim_key": claim_key, "runner_id": runner_id}).first()
    if row is None:
        return None
    conn.execute(
        sa.update(tasks)
        .where(tasks.c.id == row.id, tasks.c.fencing_token == row.fencing_token)
        .values(lease_expires_at=expires)
    )
    return _lease_sql.claimed(row, row.run_id, expires)


def claim_one_statement() -> sa.Update:
    """Lease the task ``task_id`` if it is ready and due (parameters as
    ``_lease_sql.claim_statement``); no row when it is not. Concurrent claimers of the same
    row serialise on its lock (SQLite: on the write lock) and only the first matches."""
    if not _CLAIM_ONE:
        now = sa.bindparam("now", type_=UTCDateTime())
        _CLAIM_ONE[None] = (
            sa.update(tasks)
            .where(
                tasks.c.id == sa.bindparam("task_id"),
                tasks.c.status == TaskState.READY.value,
                tasks.c.run_after <= now,
            )
            .values(
                status=TaskState.RUNNING.value,
                attempts=tasks.c.attempts + 1,
                fencing_token=tasks.c.fencing_token + 1,
                lease_owner=sa.bindparam("runner_id", type_=sa.Text()),
                lease_expires_at=sa.bindparam("expires", type_=UTCDateTime()),
                updated_at=now,
                reason=None,
            )
            .returning(*_CLAIMED)
        )
    return _CLAIM_ONE[None]


# Built once: building an UPDATE costs more than running it.
_CLAIM_ONE: dict[None, sa.Update] = {}


def refusal(conn: sa.Connection, task_id: str, now: datetime) -> Exception:
    """Why ``task_id`` could not be claimed, as the error to raise: a TaskError when it
    does not exist, else a ClaimConflictError that says what it waits for."""
    row = conn.execute(
        sa.select(tasks.c.status, tasks.c.lease_owner, tasks.c.run_after).where(
            tasks.c.id == task_id
        )
    ).first()
    if row is None:
        return no_task(task_id)
    status = row.status
    if status in _lease_sql.LEASED:
        owner = row.lease_owner or "no runner (waiting for an operator)"
        return ClaimConflictError(
            f"task {task_id} is taken: {status} on {owner}",
            fix="claim another task, or wait until it ends",
        )
    if status == TaskState.PENDING.value:
        waiting = conn.execute(
            sa.select(tasks.c.id, tasks.c.status)
            .select_from(
                task_dependencies.join(tasks, tasks.c.id == task_dependencies.c.depends_on_id)
            )
            .where(task_dependencies.c.task_id == task_id, tasks.c.status != TaskState.DONE.value)
            .order_by(tasks.c.id)
        ).all()
        names = ", ".join(f"{dep.id} ({dep.status})" for dep in waiting) or "none left"
        return ClaimConflictError(
            f"task {task_id} waits for dependencies that are not done: {names}",
            fix="it becomes ready when every dependency is done",
        )
    if status == TaskState.READY.value and row.run_after > now:
        return ClaimConflictError(
            f"task {task_id} is not due until {row.run_after.isoformat()}",
            fix="claim it after that time",
        )
    return ClaimConflictError(
        f"task {task_id} already ended {status}",
        fix=f"`capataz task requeue {task_id}` runs it again",
    )


def ended_as(
    conn: sa.Connection,
    task_id: str,
    fencing_token: int,
    status: RunStatus,
    outcome: str | None = None,
) -> bool:
    """Whether the run of lease ``fencing_token`` already ended with ``status`` (and,
    when given, the reported ``outcome``): a report repeated after its answer was lost
    is then accepted again, not refused."""
    row: Any = conn.execute(
        sa.select(runs.c.status, runs.c.outcome).where(
            runs.c.task_id == task_id, runs.c.fencing_token == fencing_token
        )
    ).first()
    if row is None or row.status != status.value:
        return False
    return outcome is None or row.outcome == outcome
