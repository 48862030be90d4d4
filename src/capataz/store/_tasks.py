"""``store.tasks``: adding tasks, reading them back, and what an operator does to one
(cancel, requeue). The row-level SQL these share with leases is in ``_task_sql``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.names import new_task_id
from capataz.store import _lease_sql, _task_sql
from capataz.store._base import StoreBase, no_task
from capataz.store.errors import ArgumentRefusedError
from capataz.store.records import NewTask, Task
from capataz.store.schema import tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["Tasks"]


# A batch this large refreshes the planner's statistics (PostgreSQL).
ANALYZE_AFTER = 200


class Tasks(StoreBase):
    """The queue's tasks as operators and intake see them."""

    # -- adding and reading ----------------------------------------------------------

    def add(
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
        return self.add_many([spec], actor=actor)[0]

    def add_many(self, specs: Sequence[NewTask], *, actor: str = "capataz") -> list[Task]:
        """Add tasks that may depend on each other, all or nothing. Unknown dependencies
        and cycles are refused before anything is written."""
        now = self._now()
        ids = [spec.id or new_task_id(now) for spec in specs]
        if len(set(ids)) != len(ids):
            raise ArgumentRefusedError(
                "the same task id appears twice", fix="give every task its own id"
            )
        keys = [spec.idempotency_key for spec in specs if spec.idempotency_key]
        if len(set(keys)) != len(keys):
            raise ArgumentRefusedError(
                "the same idempotency key appears twice", fix="give every task its own key"
            )
        for attempt in range(2):
            try:
                with self._write() as conn:
                    final = _task_sql.insert_batch(conn, specs, ids, now, actor)
                    loaded = {task.id: task for task in _task_sql.load(conn, sa.true(), final)}
                    if any(task.status is TaskState.READY for task in loaded.values()):
                        self._notify_ready(conn)
                self._refresh_statistics(len(specs))
                return [loaded[tid] for tid in final]
            except sa.exc.IntegrityError:
                # Another process added the same idempotency key between our check
                # and our insert (PostgreSQL only; SQLite writers are serial): the
                # second pass finds it and returns it.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _refresh_statistics(self, added: int) -> None:
        """After a large batch on PostgreSQL, refresh the planner's statistics of
        ``tasks`` at once. Until autovacuum does (up to a minute later), a planner that
        still believes the table nearly empty picks the claim's next task by sorting
        every ready row (milliseconds per claim on a few thousand) instead of reading
        the first entry of the claim index."""
        if self._postgres and added >= ANALYZE_AFTER:
            with self._single_statement() as conn:
                conn.exec_driver_sql("ANALYZE tasks")

    def get(self, task_id: str) -> Task:
        with self._read() as conn:
            found = _task_sql.load(conn, tasks.c.id == task_id)
        if not found:
            raise no_task(task_id)
        return found[0]

    def with_key_prefix(self, prefix: str) -> list[Task]:
        """Tasks whose idempotency key starts with ``prefix``, oldest first: a front end
        that derives keys from a source (``prd:docs/x.md#AC1``) finds everything it
        queued from that source without a column of its own. ``%`` and ``_`` in the
        prefix are literal."""
        if not prefix:
            raise ArgumentRefusedError("the key prefix is empty", fix="give a prefix")
        where = tasks.c.idempotency_key.startswith(prefix, autoescape=True)
        with self._read() as conn:
            return _task_sql.load(conn, where)

    def page(
        self, status: TaskState | str | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Task], int]:
        """One page of :meth:`list` and the total it is a page of, both computed in
        SQL: the API lists big queues without loading every task."""
        if limit < 0 or offset < 0:
            raise ArgumentRefusedError("limit and offset cannot be negative", fix="use 0 or more")
        where = sa.true() if status is None else tasks.c.status == TaskState(status).value
        with self._read() as conn:
            return _task_sql.load_page(conn, where, limit, offset)

    # -- operators -------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str | None = None, *, actor: str = "capataz") -> Task:
        """Cancel a task that has not ended; a running (or escalated) one loses its lease
        at once (its runner's next heartbeat, poll or report is refused), and its
        dependents never run."""
        now = self._now()
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
            _task_sql.release_or_cascade(conn, task_id, TaskState.CANCELLED, now, actor)
            return _task_sql.load(conn, tasks.c.id == task_id)[0]

    def requeue(
        self, task_id: str, backoff_seconds: float = 0.0, *, actor: str = "capataz"
    ) -> Task:
        """Give an ended (or escalated) task a fresh set of attempts after
        ``backoff_seconds``; it waits again if a dependency is not done. An escalated
        task whose runner still waits for an answer is taken from that runner (its run
        ends cancelled, its token is revoked) instead of being answered."""
        now = self._now()
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
            return _task_sql.load(conn, tasks.c.id == task_id)[0]

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

    # Last: a method named ``list`` would shadow the builtin in annotations below it.
    def list(self, status: TaskState | str | None = None) -> list[Task]:
        """Tasks oldest first, all or those in one state."""
        where = sa.true() if status is None else tasks.c.status == TaskState(status).value
        with self._read() as conn:
            return _task_sql.load(conn, where)
