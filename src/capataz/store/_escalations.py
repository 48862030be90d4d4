"""``store.escalations``: a run asks a human through the database, the human answers
from any machine (CLI, panel, API), the runner polls for the answer.

While it waits the task is ``escalated`` and its runner keeps the lease (and keeps
heartbeating), so a dead runner's escalation is rescued by the sweeper like a running
task, and a cancel reaches the runner the same way."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.models import EscalationChoice
from capataz.redaction import redact, redact_data
from capataz.store import _lease_sql
from capataz.store._base import StoreBase
from capataz.store.errors import ArgumentRefusedError
from capataz.store.records import EscalationAnswer
from capataz.store.schema import escalations, runs, tasks
from capataz.store.statuses import TaskState

__all__ = ["Escalations"]

_CHOICES = ", ".join(choice.value for choice in EscalationChoice)


class Escalations(StoreBase):
    """Questions runs ask humans, and their answers."""

    def open(
        self,
        task_id: str,
        fencing_token: int,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Ask a human about the task the runner holds under ``fencing_token``: the task
        becomes ``escalated`` (the runner keeps the lease and keeps heartbeating). False
        when the token is not the task's current lease. Asking again while the question
        is open changes nothing and returns True. ``details`` is what the human judges
        (violations, file changes, diff), shown by the panel and the API."""
        now = self._now()
        reason, details = redact(reason), redact_data(details)
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
            if not _lease_sql.holds(current, fencing_token):
                return False
            if current.status == TaskState.ESCALATED.value:
                return True
            run_id = (
                sa.select(runs.c.id)
                .where(runs.c.task_id == task_id, runs.c.fencing_token == fencing_token)
                .scalar_subquery()
            )
            conn.execute(
                sa.insert(escalations).values(
                    task_id=task_id,
                    run_id=run_id,
                    fencing_token=fencing_token,
                    reason=reason,
                    opened_at=now,
                    details=details,
                )
            )
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(status=TaskState.ESCALATED.value, reason=reason, updated_at=now)
            )
            self._audit(conn, current.lease_owner, "escalation.opened", task_id, reason=reason)
            run = conn.execute(sa.select(run_id)).scalar()
            self._event(
                conn,
                EventType.TASK_STATE,
                task_id=task_id,
                run_id=run,
                status=TaskState.ESCALATED.value,
                was=current.status,
                reason=reason,
            )
            self._event(
                conn, EventType.ESCALATION_OPENED, task_id=task_id, run_id=run, reason=reason
            )
        return True

    def answer(
        self, task_id: str, decision: str, *, note: str = "", decided_by: str = "cli"
    ) -> None:
        """Answer the task's open escalation with approve, reject, modify or abort; the
        task goes back to ``running`` and its runner picks the answer up by polling."""
        try:
            choice = EscalationChoice(decision.strip().lower())
        except ValueError:
            raise ArgumentRefusedError(
                f"{decision!r} is not an escalation decision", fix=f"answer one of {_CHOICES}"
            ) from None
        now = self._now()
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
            waiting = conn.execute(
                sa.select(escalations.c.id)
                .where(
                    escalations.c.task_id == task_id,
                    escalations.c.fencing_token == current.fencing_token,
                    escalations.c.closed_at.is_(None),
                )
                .order_by(escalations.c.id.desc())
                .limit(1)
            ).scalar()
            if not _lease_sql.holds(current, current.fencing_token) or waiting is None:
                if current.status == TaskState.ESCALATED.value:
                    raise TaskError(
                        f"task {task_id} is escalated but no runner is waiting for an answer",
                        fix=f"`capataz task requeue {task_id}` runs it again",
                    )
                raise TaskError(
                    f"task {task_id} is {current.status}, not waiting for a decision",
                    fix="`capataz task list --status escalated` shows the tasks that are",
                )
            conn.execute(
                sa.update(escalations)
                .where(escalations.c.id == waiting)
                .values(
                    decision=choice.value,
                    note=note,
                    decided_by=decided_by,
                    answered_at=now,
                    closed_at=now,
                )
            )
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(status=TaskState.RUNNING.value, reason=None, updated_at=now)
            )
            self._audit(
                conn,
                decided_by,
                "escalation.answered",
                task_id,
                decision=choice.value,
                note=note,
            )
            self._event(
                conn,
                EventType.ESCALATION_ANSWERED,
                task_id=task_id,
                decision=choice.value,
                decided_by=decided_by,
                note=note,
            )
            self._event(
                conn,
                EventType.TASK_STATE,
                task_id=task_id,
                status=TaskState.RUNNING.value,
                was=current.status,
                reason=None,
            )

    def poll(self, task_id: str, fencing_token: int) -> EscalationAnswer | None:
        """The answer to the newest escalation the runner opened under
        ``fencing_token``, or None while it is unanswered. When the lease is no longer
        the runner's (the task was cancelled, rescued or given back), the answer is
        ``abort`` from ``capataz``: the run must stop and roll back."""
        now = self._now()
        newest = (
            sa.select(
                escalations.c.decision,
                escalations.c.note,
                escalations.c.decided_by,
                escalations.c.answered_at,
            )
            .where(escalations.c.task_id == task_id, escalations.c.fencing_token == fencing_token)
            .order_by(escalations.c.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(newest).first()
            state = conn.execute(
                sa.select(tasks.c.status, tasks.c.fencing_token, tasks.c.lease_owner).where(
                    tasks.c.id == task_id
                )
            ).first()
        if state is None or not _lease_sql.holds(state, fencing_token):
            why = "the task no longer holds this lease" if state else "the task is gone"
            return EscalationAnswer("abort", why, "capataz", now)
        if row is None or row.decision is None:
            return None
        return EscalationAnswer(row.decision, row.note or "", row.decided_by or "", row.answered_at)

    def list(
        self, *, open_only: bool = True, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Escalations newest first, with the task's title and state so a reviewer sees
        what is being asked without a second query: only those still waiting for an
        answer (``open_only``), or every one ever opened."""
        if limit < 0 or offset < 0:
            raise ArgumentRefusedError("limit and offset cannot be negative", fix="use 0 or more")
        query = sa.select(
            escalations.c.id,
            escalations.c.task_id,
            escalations.c.run_id,
            escalations.c.reason,
            escalations.c.opened_at,
            escalations.c.decision,
            escalations.c.decided_by,
            escalations.c.note,
            escalations.c.answered_at,
            escalations.c.closed_at,
            escalations.c.details,
            tasks.c.title.label("task_title"),
            tasks.c.status.label("task_status"),
        ).select_from(escalations.join(tasks, tasks.c.id == escalations.c.task_id))
        if open_only:
            query = query.where(escalations.c.closed_at.is_(None))
        query = query.order_by(escalations.c.opened_at.desc(), escalations.c.id.desc())
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [dict(row._mapping) for row in rows]
