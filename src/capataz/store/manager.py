"""The Store: the one owner of capataz's SQL. Everything else asks it.

Every method is one short transaction, and every state change in it appends an audit
entry in that same transaction, so the audit trail and the tables can never disagree.
On SQLite each write transaction starts with BEGIN IMMEDIATE (see engine.py), which
serialises writers; on PostgreSQL rows are locked explicitly (FOR UPDATE, SKIP LOCKED
where another runner may simply take the next row).

The class is assembled from mixins, one file per concern: leases (``_leasing``, over
the statements in ``_lease_sql``), runners (``_runners``), run records (``_runs``),
escalations (``_escalations``), API tokens (``_tokens``) and secrets with the context
store's rows (``_secrets``); tasks, operators, metrics, events, audit and wake-ups live
here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.errors import TaskError
from capataz.events import EventRecord, EventType
from capataz.models import utcnow
from capataz.names import new_task_id
from capataz.store import _events, _lease_sql, _tasks
from capataz.store import audit as audit_log
from capataz.store._base import no_task
from capataz.store._escalations import EscalationsMixin
from capataz.store._leasing import LeasingMixin
from capataz.store._runners import RunnersMixin, online_clause
from capataz.store._runs import RunsMixin
from capataz.store._secrets import SecretsMixin
from capataz.store._sqlite_claims import ClaimConnections
from capataz.store._tokens import TokensMixin
from capataz.store._wakeup import ReadyListener
from capataz.store.engine import create_engine_for
from capataz.store.migrate import upgrade
from capataz.store.records import NewTask, Task
from capataz.store.schema import UTCDateTime, runners, runs, tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["Store"]

# Sweepers tidy (silent runners, old events) at most this often per process.
TIDY_SECONDS = 10.0
# On SQLite a runner polls: wait_for_ready sleeps at most this long.
SQLITE_POLL_SECONDS = 0.05


class Store(LeasingMixin, RunnersMixin, RunsMixin, EscalationsMixin, TokensMixin, SecretsMixin):
    """Tasks, leases, runners, runs and their audit trail in one database (SQLite or
    PostgreSQL)."""

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
        self._tidied_at = float("-inf")
        self._listener = ReadyListener(engine.url) if self._postgres else None
        self._claim_connections = None if self._postgres else ClaimConnections(engine)

    @classmethod
    def open(cls, url: str, **options: Any) -> Store:
        """Connect to ``url`` and bring its schema up to date (capataz migrates on start)."""
        engine = create_engine_for(url)
        upgrade(engine)
        return cls(engine, **options)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._claim_connections is not None:
            self._claim_connections.close()
        self.engine.dispose()

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
        """Add one task (see :class:`NewTask` for the options). An idempotency key that
        already exists returns the existing task instead of adding another."""
        spec = NewTask(title=title, instruction=instruction, agent=agent, **options)
        return self.add_tasks([spec], actor=actor)[0]

    def add_tasks(self, specs: Sequence[NewTask], *, actor: str = "capataz") -> list[Task]:
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
                    if any(task.status is TaskState.READY for task in loaded.values()):
                        self._notify_ready(conn)
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
            raise no_task(task_id)
        return found[0]

    def list_tasks(self, status: TaskState | str | None = None) -> list[Task]:
        """Tasks oldest first, all or those in one state."""
        where = sa.true() if status is None else tasks.c.status == TaskState(status).value
        with self._read() as conn:
            return _tasks.load(conn, where)

    def page_tasks(
        self, status: TaskState | str | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Task], int]:
        """One page of :meth:`list_tasks` and the total it is a page of, both computed
        in SQL: the API lists big queues without loading every task."""
        if limit < 0 or offset < 0:
            raise TaskError("limit and offset cannot be negative", fix="use 0 or more")
        where = sa.true() if status is None else tasks.c.status == TaskState(status).value
        with self._read() as conn:
            return _tasks.load_page(conn, where, limit, offset)

    # -- operators -------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str | None = None, *, actor: str = "capataz") -> Task:
        """Cancel a task that has not ended; a running (or escalated) one loses its lease
        at once (its runner's next heartbeat, poll or report is refused), and its
        dependents never run."""
        now = self.clock()
        reason = reason or f"cancelled by {actor}"
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
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
            run_id = _lease_sql.take_from_runner(conn, task_id, current, now=now, reason=reason)
            self._audit(conn, actor, "task.cancelled", task_id, reason=reason, was=current.status)
            self._taken_events(
                conn, task_id, run_id, TaskState.CANCELLED, was=current.status, reason=reason
            )
            _tasks.release_or_cascade(conn, task_id, TaskState.CANCELLED, now, actor)
            return _tasks.load(conn, tasks.c.id == task_id)[0]

    def requeue(
        self, task_id: str, backoff_seconds: float = 0.0, *, actor: str = "capataz"
    ) -> Task:
        """Give an ended (or escalated) task a fresh set of attempts after
        ``backoff_seconds``; it waits again if a dependency is not done. An escalated
        task whose runner still waits for an answer is taken from that runner (its run
        ends cancelled, its token is revoked) instead of being answered."""
        now = self.clock()
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
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
            unfinished = _lease_sql.unfinished_dependencies(conn, task_id)
            state = TaskState.PENDING if unfinished else TaskState.READY
            reason = f"requeued by {actor}"
            run_id = _lease_sql.take_from_runner(conn, task_id, current, now=now, reason=reason)
            self._taken_events(conn, task_id, run_id, state, was=current.status, reason=reason)
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    status=state.value,
                    attempts=0,
                    reason=reason,
                    updated_at=now,
                    run_after=now + timedelta(seconds=backoff_seconds),
                    lease_owner=None,
                    lease_expires_at=None,
                    fencing_token=tasks.c.fencing_token + 1,
                )
            )
            if state is TaskState.READY:
                self._notify_ready(conn)
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

    def _taken_events(
        self,
        conn: sa.Connection,
        task_id: str,
        run_id: str | None,
        state: TaskState,
        *,
        was: str,
        reason: str,
    ) -> None:
        """An operator moved the task; a run it took from a runner ended cancelled."""
        self._event(
            conn, EventType.TASK_STATE, task_id=task_id, status=state.value, was=was, reason=reason
        )
        if run_id is not None:
            self._event(
                conn,
                EventType.RUN_FINISHED,
                task_id=task_id,
                run_id=run_id,
                status=RunStatus.CANCELLED.value,
                reason=reason,
            )

    # -- operations ------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The runbook's figures (``GET /ops/metrics``, ``capataz metrics``): tasks per
        state (every state, zeros included), runners online and offline, the share of
        the last 20 finished runs that ended failed or blocked, and how long the oldest
        due ready task has waited (None when none is)."""
        now = self.clock()
        online = online_clause(now)
        # When a ready task became claimable: its run_after, or when it last changed
        # (released by its dependencies, given back), whichever is later.
        due_since = sa.type_coerce(
            sa.case(
                (tasks.c.run_after > tasks.c.updated_at, tasks.c.run_after),
                else_=tasks.c.updated_at,
            ),
            UTCDateTime(),
        )
        # Newest first by start (the index runs already have); claims stay cheap.
        last_20 = (
            sa.select(runs.c.outcome)
            .where(runs.c.status == RunStatus.FINISHED.value)
            .order_by(runs.c.started_at.desc())
            .limit(20)
            .subquery()
        )
        with self._read() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
                ).all()
            )
            runner_counts = conn.execute(
                sa.select(
                    sa.func.count().filter(online),
                    sa.func.count(),
                ).select_from(runners)
            ).one()
            finished = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count().filter(
                        last_20.c.outcome.in_((TaskState.FAILED.value, TaskState.BLOCKED.value))
                    ),
                ).select_from(last_20)
            ).one()
            total_runs = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
            oldest = conn.execute(
                sa.select(sa.func.min(due_since)).where(
                    tasks.c.status == TaskState.READY.value, tasks.c.run_after <= now
                )
            ).scalar()
        return {
            "tasks": {state.value: int(counts.get(state.value, 0)) for state in TaskState},
            "runners": {
                "online": int(runner_counts[0]),
                "offline": int(runner_counts[1] - runner_counts[0]),
            },
            "runs": {
                "fail_rate_last_20": finished[1] / finished[0] if finished[0] else 0.0,
                "total": int(total_runs),
            },
            "backlog": {
                "oldest_ready_age_seconds": (
                    max((now - oldest).total_seconds(), 0.0) if oldest is not None else None
                )
            },
        }

    def wait_for_ready(self, timeout: float) -> bool:
        """Block until a task may have become ready or ``timeout`` seconds pass; True
        when woken. PostgreSQL: a LISTEN connection (opened on first use, reopened after
        errors) wakes on the notification every such transaction sends. SQLite: sleeps
        at most 50 ms and returns False; the runner polls."""
        if self._listener is None:
            time.sleep(min(max(timeout, 0.0), SQLITE_POLL_SECONDS))
            return False
        return self._listener.wait(timeout)

    @property
    def waits_for_ready(self) -> bool:
        """Whether :meth:`wait_for_ready` blocks until a task may be ready (PostgreSQL's
        LISTEN) rather than sleeping briefly: an idle runner only waits in it then."""
        return self._listener is not None

    def sweep(
        self, now: datetime | None = None, *, actor: str = "sweeper", limit: int = 500
    ) -> list[str]:
        """Rescue expired leases (see ``LeasingMixin.sweep``) and, at most every
        ``TIDY_SECONDS`` per process, tidy up: silent runners are reported offline and
        old events dropped. Every runner sweeps (and the API's ``/runner/sweep`` for
        remote ones), so this needs no service of its own."""
        rescued = super().sweep(now, actor=actor, limit=limit)
        if time.monotonic() - self._tidied_at > TIDY_SECONDS:
            self._tidied_at = time.monotonic()
            self.tidy()
        return rescued

    # -- events ----------------------------------------------------------------------

    def events_after(
        self,
        after: int,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        types: frozenset[str] | None = None,
        limit: int = 500,
    ) -> list[EventRecord]:
        """Events with an id above ``after``, oldest first, optionally of one task, one
        run or some types (``GET /events``)."""
        with self._read() as conn:
            return _events.read_after(
                conn, after, task_id=task_id, run_id=run_id, types=types, limit=limit
            )

    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a new stream starts."""
        with self._read() as conn:
            return _events.last_id(conn)

    # -- audit -----------------------------------------------------------------------

    def verify_audit(self) -> audit_log.AuditFault | None:
        with self._read() as conn:
            return audit_log.verify_detail(conn)

    def export_audit(self, file: TextIO) -> int:
        with self._read() as conn:
            return audit_log.export_jsonl(conn, file)
