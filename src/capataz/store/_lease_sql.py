"""SQL statements and row helpers for leases and runs, with no transaction of their own:
picking and leasing a task, opening and closing run rows, finding expired leases. The
operations that compose them into transactions (claim, heartbeat, complete, release,
rescue) are in ``_leases``. Private to the store."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from capataz.store._base import no_task
from capataz.store.records import ClaimedTask
from capataz.store.schema import escalations, runs, task_dependencies, tasks
from capataz.store.statuses import RunStatus, TaskState
from capataz.units import Budget

__all__ = [
    "LEASED",
    "claimed",
    "close_escalations",
    "end_run",
    "expired_statement",
    "holds",
    "lock_task",
    "new_run_id",
    "start_run",
    "unfinished_dependencies",
]

# The states in which a runner holds a task: working on it, or waiting (still holding
# the lease, still heartbeating) for a human to answer its escalation.
LEASED = (TaskState.RUNNING.value, TaskState.ESCALATED.value)


def new_run_id() -> str:
    return f"run-{secrets.token_hex(8)}"


def start_run(
    conn: sa.Connection, row: Any, runner_id: str, now: datetime, claim_key: str | None = None
) -> str:
    run_id = new_run_id()
    values = {
        "id": run_id,
        "task_id": row.id,
        "attempt": row.attempts,
        "runner_id": runner_id,
        "fencing_token": row.fencing_token,
        "status": RunStatus.RUNNING.value,
        "started_at": now,
        "claim_key": claim_key,
    }
    conn.execute(_INSERT_RUN, values)
    return run_id


_INSERT_RUN = runs.insert()


def claimed(row: Any, run_id: str, expires: datetime) -> ClaimedTask:
    return ClaimedTask(
        id=row.id,
        run_id=run_id,
        title=row.title,
        instruction=row.instruction,
        agent=row.agent,
        labels=tuple(row.labels),
        allow_high=row.allow_high,
        base_commit=row.base_commit,
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        fencing_token=row.fencing_token,
        lease_expires_at=expires,
        budget=Budget.from_json(row.budget),
        idempotency_key=row.idempotency_key,
    )


def end_run(
    conn: sa.Connection,
    task_id: str,
    fencing_token: int,
    status: RunStatus,
    *,
    now: datetime,
    reason: str | None,
    **values: Any,
) -> str | None:
    """Close the run of the lease ``fencing_token`` (each lease has exactly one run);
    returns its id. ``values`` sets more columns of the run."""
    names = tuple(sorted(values))
    stmt = _END_RUN.get(names)
    if stmt is None:
        stmt = _END_RUN[names] = (
            sa.update(runs)
            .where(
                runs.c.task_id == sa.bindparam("task_id_"),
                runs.c.fencing_token == sa.bindparam("token_"),
            )
            .values(
                **{name: sa.bindparam(name) for name in ("status", "ended_at", "reason", *names)}
            )
            .returning(runs.c.id)
        )
    params = {"task_id_": task_id, "token_": fencing_token, "status": status.value}
    run_id: str | None = conn.execute(
        stmt, {**params, "ended_at": now, "reason": reason, **values}
    ).scalar()
    return run_id


# Built once per set of columns: building an UPDATE costs more than running it.
_END_RUN: dict[tuple[str, ...], sa.Update] = {}


def close_escalations(conn: sa.Connection, task_id: str, now: datetime) -> None:
    """Close the task's unanswered escalation: its lease ended before an answer came."""
    conn.execute(
        sa.update(escalations)
        .where(escalations.c.task_id == task_id, escalations.c.closed_at.is_(None))
        .values(closed_at=now)
    )


def holds(current: Any, fencing_token: int) -> bool:
    """Whether the lease ``fencing_token`` is the task's live lease (``current`` is a
    row from :func:`lock_task`). An escalated task without a lease waits for an
    operator, not for a runner."""
    return bool(
        current.status in LEASED
        and current.fencing_token == fencing_token
        and current.lease_owner is not None
    )


def expired_statement(now: datetime, limit: int, *, postgres: bool) -> sa.Select[Any]:
    """Leased tasks (running or escalated) whose lease ran out before ``now``; on
    PostgreSQL rows another sweeper is already handling are skipped, so concurrent
    sweepers split the work."""
    query = (
        sa.select(
            tasks.c.id,
            tasks.c.fencing_token,
            tasks.c.attempts,
            tasks.c.max_attempts,
            tasks.c.lease_owner,
            tasks.c.lease_expires_at,
            tasks.c.status,
        )
        .where(tasks.c.status.in_(LEASED), tasks.c.lease_expires_at < now)
        .order_by(tasks.c.lease_expires_at)
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if postgres else query


def lock_task(conn: sa.Connection, task_id: str, *, postgres: bool) -> Any:
    """The task's row, locked against concurrent changes until commit (SQLite's write
    transaction is exclusive already)."""
    row = conn.execute(_LOCK_TASK[postgres], {"task_id": task_id}).first()
    if row is None:
        raise no_task(task_id)
    return row


_TASK_ROW = sa.select(
    tasks.c.status,
    tasks.c.fencing_token,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.lease_owner,
).where(tasks.c.id == sa.bindparam("task_id"))
_LOCK_TASK = {False: _TASK_ROW, True: _TASK_ROW.with_for_update()}


def unfinished_dependencies(conn: sa.Connection, task_id: str) -> int:
    edge_to_task = task_dependencies.join(tasks, tasks.c.id == task_dependencies.c.depends_on_id)
    query = (
        sa.select(sa.func.count())
        .select_from(edge_to_task)
        .where(task_dependencies.c.task_id == task_id, tasks.c.status != TaskState.DONE.value)
    )
    return int(conn.execute(query).scalar_one())


def take_from_runner(
    conn: sa.Connection, task_id: str, current: Any, *, now: datetime, reason: str
) -> str | None:
    """An operator took the task (cancel, requeue) while a runner held it: that runner's
    run ends cancelled and any escalation it waits on is closed. Returns that run's id."""
    if not holds(current, current.fencing_token):
        return None
    run_id = end_run(
        conn, task_id, current.fencing_token, RunStatus.CANCELLED, now=now, reason=reason
    )
    close_escalations(conn, task_id, now)
    return run_id
