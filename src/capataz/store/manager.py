"""The Store: the one owner of capataz's SQL. Everything else asks it.

Every method is one short transaction, and every state change in it appends an audit
entry in that same transaction, so the audit trail and the tables can never disagree.
On SQLite each write transaction starts with BEGIN IMMEDIATE (see engine.py), which
serialises writers; on PostgreSQL rows are locked explicitly (FOR UPDATE, SKIP LOCKED
where another runner may simply take the next row).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.errors import TaskError
from capataz.models import utcnow
from capataz.store import _leases, _tasks
from capataz.store import audit as audit_log
from capataz.store.engine import READ_ONLY, create_engine_for
from capataz.store.migrate import upgrade
from capataz.store.records import ClaimedTask, Task, TaskSpec
from capataz.store.schema import tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["Store"]

_ENDINGS = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.BLOCKED, TaskState.ESCALATED, TaskState.CANCELLED}
)


def new_task_id(now: datetime) -> str:
    return f"t-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


class Store:
    """Tasks, leases and their audit trail in one database (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        retry_base_seconds: float = 2.0,
        retry_cap_seconds: float = 300.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self._postgres = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str, **options: Any) -> Store:
        """Connect to ``url`` and bring its schema up to date (capataz migrates on start)."""
        engine = create_engine_for(url)
        upgrade(engine)
        return cls(engine, **options)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    def _audit(
        self, conn: sa.Connection, actor: str, action: str, subject: str, **payload: Any
    ) -> None:
        audit_log.append(
            conn, at=self.clock(), actor=actor, action=action, subject=subject, payload=payload
        )

    # -- adding and reading ----------------------------------------------------------

    def add_task(
        self,
        title: str,
        instruction: str,
        agent: str = "shell",
        *,
        actor: str = "capataz",
        **options: Any,
    ) -> Task:
        """Add one task (see :class:`TaskSpec` for the options). An idempotency key that
        already exists returns the existing task instead of adding another."""
        spec = TaskSpec(title=title, instruction=instruction, agent=agent, **options)
        return self.add_tasks([spec], actor=actor)[0]

    def add_tasks(self, specs: Sequence[TaskSpec], *, actor: str = "capataz") -> list[Task]:
        """Add tasks that may depend on each other, all or nothing. Unknown dependencies
        and cycles are refused before anything is written."""
        now = self.clock()
        ids = [spec.id or new_task_id(now) for spec in specs]
        if len(set(ids)) != len(ids):
            raise TaskError("the same task id appears twice", fix="give every task its own id")
        keys = [spec.idempotency_key for spec in specs if spec.idempotency_key]
        if len(set(keys)) != len(keys):
            raise TaskError(
                "the same idempotency key appears twice", fix="give every task its own key"
            )
        for attempt in range(2):
            try:
                with self._write() as conn:
                    final = _tasks.insert_batch(conn, specs, ids, now, actor)
                    loaded = {task.id: task for task in _tasks.load(conn, sa.true(), final)}
                    return [loaded[tid] for tid in final]
            except sa.exc.IntegrityError:
                # Another process added the same idempotency key between our check
                # and our insert (PostgreSQL only; SQLite writers are serial): the
                # second pass finds it and returns it.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_task(self, task_id: str) -> Task:
        with self._read() as conn:
            found = _tasks.load(conn, tasks.c.id == task_id)
        if not found:
            raise TaskError(f"no task {task_id}", fix="`capataz task list` shows the task ids")
        return found[0]

    def list_tasks(self, status: TaskState | str | None = None) -> list[Task]:
        """Tasks oldest first, all or those in one state."""
        where = sa.true() if status is None else tasks.c.status == TaskState(status).value
        with self._read() as conn:
            return _tasks.load(conn, where)

    # -- leases ----------------------------------------------------------------------

    def claim(
        self, runner_id: str, lease_seconds: float = 30.0, labels: Iterable[str] | None = None
    ) -> ClaimedTask | None:
        """Lease the most urgent ready task (highest priority, then oldest) to
        ``runner_id``, or return None when nothing is due. With ``labels``, only tasks
        whose labels are all among them are taken. One statement picks and updates the
        row: on PostgreSQL the pick skips rows other runners hold (SKIP LOCKED); on
        SQLite the transaction already holds the write lock."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        stmt = _leases.claim_statement(labels=labels is not None, postgres=self._postgres)
        params: dict[str, Any] = {"now": now, "expires": expires, "runner_id": runner_id}
        if labels is not None:
            params["runner_labels"] = sorted(set(labels))
        with self._write() as conn:
            row = conn.execute(stmt, params).first()
            if row is None:
                return None
            run_id = _leases.start_run(conn, row, runner_id, now)
            payload = {"run_id": run_id, "attempt": row.attempts, "token": row.fencing_token}
            self._audit(conn, runner_id, "task.claimed", row.id, **payload)
        return _leases.claimed(row, run_id, expires)

    def heartbeat(self, task_id: str, fencing_token: int, lease_seconds: float = 30.0) -> bool:
        """Extend the lease; False means the task is no longer this holder's (cancelled,
        or rescued by the sweeper) and the runner should stop working on it."""
        now = self.clock()
        stmt = (
            sa.update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status == TaskState.RUNNING.value,
                tasks.c.fencing_token == fencing_token,
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def complete(
        self,
        task_id: str,
        fencing_token: int,
        state: TaskState | str,
        reason: str | None = None,
        *,
        decision: str | None = None,
        actor: str | None = None,
    ) -> bool:
        """Record how an attempt ended. Refused (False, and the refusal audited) when
        ``fencing_token`` is not the task's current lease: the runner lost the task and
        someone else may be running it. A failed attempt with attempts left goes back
        to ready after an exponential backoff with jitter."""
        state = TaskState(state)
        if state not in _ENDINGS:
            raise TaskError(
                f"a run cannot end a task as {state}",
                fix=f"report one of {', '.join(sorted(_ENDINGS))}",
            )
        now = self.clock()
        with self._write() as conn:
            current = _leases.lock_task(conn, task_id, postgres=self._postgres)
            who = actor or current.lease_owner or "runner"
            if current.status != TaskState.RUNNING.value or current.fencing_token != fencing_token:
                self._audit(
                    conn,
                    who,
                    "task.complete_refused",
                    task_id,
                    fencing_token=fencing_token,
                    current_token=current.fencing_token,
                    status=current.status,
                    reported=state.value,
                )
                return False
            final, run_after = state, None
            if state is TaskState.FAILED and current.attempts < current.max_attempts:
                final = TaskState.READY
                run_after = now + timedelta(seconds=self.retry_delay(current.attempts))
            values: dict[str, Any] = {
                "status": final.value,
                "lease_owner": None,
                "lease_expires_at": None,
                "reason": reason,
                "updated_at": now,
            }
            if run_after is not None:
                values["run_after"] = run_after
            conn.execute(sa.update(tasks).where(tasks.c.id == task_id).values(**values))
            _leases.end_run(
                conn,
                task_id,
                fencing_token,
                RunStatus.FINISHED,
                now=now,
                reason=reason,
                outcome=state.value,
                decision=decision,
            )
            self._audit(
                conn,
                who,
                "task.retry" if final is TaskState.READY else f"task.{final}",
                task_id,
                reason=reason,
                attempt=current.attempts,
                decision=decision,
                run_after=run_after.isoformat() if run_after else None,
            )
            _tasks.release_or_cascade(conn, task_id, final, now, who)
        return True

    def retry_delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from the base up to the cap,
        then a random half of it shaved off so that tasks failing together do not all
        come back in the same instant."""
        doubled = self.retry_base_seconds * 2.0 ** max(attempts - 1, 0)
        ceiling = min(self.retry_cap_seconds, doubled)
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto

    def sweep(
        self, now: datetime | None = None, *, actor: str = "sweeper", limit: int = 500
    ) -> list[str]:
        """Rescue running tasks whose lease expired (their runner died or hung): back to
        ready when attempts remain, else failed. The attempt was counted at claim. Safe
        to run from every runner at once: each row is taken by one sweeper only."""
        now = now or self.clock()
        expired = _leases.expired_statement(now, limit, postgres=self._postgres)
        rescued: list[str] = []
        with self._write() as conn:
            for row in conn.execute(expired).all():
                final = TaskState.FAILED if row.attempts >= row.max_attempts else TaskState.READY
                reason = (
                    f"lease of {row.lease_owner} expired at {row.lease_expires_at:%H:%M:%S} "
                    f"(attempt {row.attempts} of {row.max_attempts})"
                )
                conn.execute(
                    sa.update(tasks)
                    .where(tasks.c.id == row.id)
                    .values(
                        status=final.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        reason=reason,
                        run_after=now,
                        updated_at=now,
                    )
                )
                _leases.end_run(
                    conn, row.id, row.fencing_token, RunStatus.LOST, now=now, reason=reason
                )
                self._audit(
                    conn,
                    actor,
                    "task.lease_expired",
                    row.id,
                    reason=reason,
                    status=final.value,
                    fencing_token=row.fencing_token,
                )
                _tasks.release_or_cascade(conn, row.id, final, now, actor)
                rescued.append(row.id)
        return rescued

    # -- operators -------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str | None = None, *, actor: str = "capataz") -> Task:
        """Cancel a task that has not ended; a running one loses its lease at once (its
        runner's next heartbeat or report is refused), and its dependents never run."""
        now = self.clock()
        reason = reason or f"cancelled by {actor}"
        with self._write() as conn:
            current = _leases.lock_task(conn, task_id, postgres=self._postgres)
            if TaskState(current.status).terminal:
                raise TaskError(
                    f"task {task_id} already ended {current.status}",
                    fix="only pending, ready, running or escalated tasks can be cancelled",
                )
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    status=TaskState.CANCELLED.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    fencing_token=tasks.c.fencing_token + 1,
                    reason=reason,
                    updated_at=now,
                )
            )
            if current.status == TaskState.RUNNING.value:
                _leases.end_run(
                    conn,
                    task_id,
                    current.fencing_token,
                    RunStatus.CANCELLED,
                    now=now,
                    reason=reason,
                )
            self._audit(conn, actor, "task.cancelled", task_id, reason=reason, was=current.status)
            _tasks.release_or_cascade(conn, task_id, TaskState.CANCELLED, now, actor)
            return _tasks.load(conn, tasks.c.id == task_id)[0]

    def requeue(
        self, task_id: str, backoff_seconds: float = 0.0, *, actor: str = "capataz"
    ) -> Task:
        """Give an ended (or escalated) task a fresh set of attempts after
        ``backoff_seconds``; it waits again if a dependency is not done."""
        now = self.clock()
        with self._write() as conn:
            current = _leases.lock_task(conn, task_id, postgres=self._postgres)
            if current.status in (
                TaskState.DONE.value,
                TaskState.RUNNING.value,
                TaskState.READY.value,
                TaskState.PENDING.value,
            ):
                raise TaskError(
                    f"task {task_id} is {current.status}; nothing to requeue",
                    fix="requeue failed, blocked, cancelled or escalated tasks",
                )
            unfinished = _leases.unfinished_dependencies(conn, task_id)
            state = TaskState.PENDING if unfinished else TaskState.READY
            reason = f"requeued by {actor}"
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    status=state.value,
                    attempts=0,
                    reason=reason,
                    updated_at=now,
                    run_after=now + timedelta(seconds=backoff_seconds),
                )
            )
            self._audit(
                conn,
                actor,
                "task.requeued",
                task_id,
                status=state.value,
                was=current.status,
                backoff_seconds=backoff_seconds,
            )
            return _tasks.load(conn, tasks.c.id == task_id)[0]

    # -- audit -----------------------------------------------------------------------

    def verify_audit(self) -> audit_log.AuditFault | None:
        with self._read() as conn:
            return audit_log.verify_detail(conn)

    def export_audit(self, file: TextIO) -> int:
        with self._read() as conn:
            return audit_log.export_jsonl(conn, file)
