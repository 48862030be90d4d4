"""``store.directives``: the planner's proposals (docs/planner.md) and what operators
decide about them.

A directive proposes a batch of tasks; applying it queues them. Both happen in **one
transaction** here — the tasks are inserted with the same statements ``store.tasks``
uses (``_task_sql.insert_batch``) inside the transaction that marks the directive
APPLIED — so a directive is never applied with half its tasks, nor its tasks queued
while it still reads PENDING (and two operators applying at once queue them once: the
second finds it APPLIED and is refused)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.redaction import redact
from capataz.store import _task_sql
from capataz.store._base import StoreBase
from capataz.store.errors import ArgumentRefusedError, NoSuchDirectiveError
from capataz.store.records import Directive, NewTask, ProposedTask, Task
from capataz.store.schema import directives, planner_calls
from capataz.store.statuses import DirectiveStatus, TaskState

__all__ = ["Directives", "new_directive_id"]


def new_directive_id(now: datetime) -> str:
    """Sortable by creation time like task ids, and told apart from them at a glance."""
    return f"d-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def _missing(directive_id: str) -> NoSuchDirectiveError:
    return NoSuchDirectiveError(
        f"no directive {directive_id}", fix="`capataz directive list` shows the directive ids"
    )


class Directives(StoreBase):
    """Directives: stored, listed, applied (their tasks queued) or rejected."""

    def add(
        self,
        title: str,
        rationale: str,
        proposed: Sequence[ProposedTask],
        *,
        model: str,
        usage: dict[str, Any] | None = None,
        status: DirectiveStatus = DirectiveStatus.PENDING,
        reason: str | None = None,
        raw_answer: str | None = None,
        apply: Sequence[NewTask] | None = None,
        actor: str = "planner",
    ) -> tuple[Directive, list[Task]]:
        """Store a directive. A REJECTED one needs the ``reason``; its ``raw_answer`` is
        masked before it is written. With ``apply`` (the auto-apply of docs/planner.md)
        those tasks are queued and the directive stored APPLIED in the same transaction;
        returns the directive and the tasks it queued."""
        if status is DirectiveStatus.REJECTED and not reason:
            raise ArgumentRefusedError(
                "a rejected directive needs a reason", fix="say why it was rejected"
            )
        if apply is not None and status is not DirectiveStatus.PENDING:
            raise ArgumentRefusedError(
                f"a {status} directive cannot be applied", fix="apply only valid directives"
            )
        now = self._now()
        directive_id = new_directive_id(now)
        with self._write() as conn:
            conn.execute(
                directives.insert().values(
                    id=directive_id,
                    title=title,
                    rationale=rationale,
                    status=status.value,
                    tasks=[task.as_json() for task in proposed],
                    model=model,
                    usage=dict(usage or {}),
                    raw_answer=redact(raw_answer) if raw_answer is not None else None,
                    reason=reason,
                    created_at=now,
                    decided_by=actor if status is DirectiveStatus.REJECTED else None,
                    decided_at=now if status is DirectiveStatus.REJECTED else None,
                    created_task_ids=[],
                )
            )
            self._audit(
                conn,
                actor,
                "directive.created",
                directive_id,
                title=title,
                status=status.value,
                tasks=len(proposed),
                reason=reason,
            )
            self._event(
                conn,
                EventType.DIRECTIVE_CREATED,
                directive_id=directive_id,
                title=title,
                status=status.value,
                tasks=len(proposed),
            )
            created: list[Task] = []
            if apply is not None:
                created = self._apply_in(conn, directive_id, apply, actor)
            return self._load(conn, directive_id), created

    def get(self, directive_id: str) -> Directive:
        with self._read() as conn:
            return self._load(conn, directive_id)

    def page(
        self, status: DirectiveStatus | str | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Directive], int]:
        """Newest first, all or those in one status, and how many there are in all."""
        if limit < 0 or offset < 0:
            raise ArgumentRefusedError("limit and offset cannot be negative", fix="use 0 or more")
        where = (
            sa.true() if status is None else directives.c.status == DirectiveStatus(status).value
        )
        query = sa.select(directives).where(where)
        with self._read() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(directives).where(where)
            ).scalar_one()
            rows = conn.execute(
                query.order_by(directives.c.created_at.desc(), directives.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [Directive.from_row(row) for row in rows], int(total)

    def apply(
        self, directive_id: str, specs: Sequence[NewTask], *, actor: str = "capataz"
    ) -> tuple[Directive, list[Task]]:
        """Queue ``specs`` (the directive's tasks, prepared by intake) and mark the
        directive APPLIED, all in one transaction: a refusal of any task (an unknown
        dependency, a cycle) leaves the directive PENDING and nothing queued. Applying
        a directive that is not PENDING is refused (409)."""
        with self._write() as conn:
            self._lock_pending(conn, directive_id, "apply")
            created = self._apply_in(conn, directive_id, specs, actor)
            return self._load(conn, directive_id), created

    def reject(self, directive_id: str, reason: str, *, actor: str = "capataz") -> Directive:
        """Mark a PENDING directive REJECTED with ``reason``; nothing is queued.
        Rejecting one that was applied (or already rejected) is refused (409)."""
        if not reason.strip():
            raise ArgumentRefusedError("a rejection needs a reason", fix="say why")
        now = self._now()
        with self._write() as conn:
            self._lock_pending(conn, directive_id, "reject")
            conn.execute(
                sa.update(directives)
                .where(directives.c.id == directive_id)
                .values(
                    status=DirectiveStatus.REJECTED.value,
                    reason=reason,
                    decided_by=actor,
                    decided_at=now,
                )
            )
            self._audit(conn, actor, "directive.rejected", directive_id, reason=reason)
            self._event(
                conn,
                EventType.DIRECTIVE_DECIDED,
                directive_id=directive_id,
                status=DirectiveStatus.REJECTED.value,
                decided_by=actor,
                reason=reason,
            )
            return self._load(conn, directive_id)

    def record_call(
        self,
        model: str,
        outcome: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float | None = None,
        directives_stored: int = 0,
        error: str | None = None,
        actor: str = "planner",
    ) -> None:
        """Keep one call to the model API: ``outcome`` is ``answered`` or the planner
        error's code. Failed calls are kept too, since a timeout or a refused answer may
        still have been paid for, and an operator asking what the planner cost needs
        them (docs/planner.md, "Usage and cost")."""
        with self._write() as conn:
            conn.execute(
                planner_calls.insert().values(
                    at=self._now(),
                    model=model,
                    outcome=outcome,
                    tokens_in=max(int(tokens_in), 0),
                    tokens_out=max(int(tokens_out), 0),
                    cost_usd=cost_usd,
                    directives=directives_stored,
                    actor=actor,
                    error=redact(error) if error is not None else None,
                )
            )

    def usage(self) -> dict[str, Any]:
        """What the planner's calls used, for ``capataz metrics``: calls (and how many
        failed), tokens in and out, and dollars (None while no call had a price), in
        all and by model."""
        cols = planner_calls.c
        failed = sa.func.count().filter(cols.outcome != "answered")
        figures = (
            sa.func.count(),
            failed,
            sa.func.coalesce(sa.func.sum(cols.tokens_in), 0),
            sa.func.coalesce(sa.func.sum(cols.tokens_out), 0),
            sa.func.sum(cols.cost_usd),
        )
        with self._read() as conn:
            total = conn.execute(sa.select(*figures)).one()
            rows = conn.execute(sa.select(cols.model, *figures).group_by(cols.model)).all()

        def shaped(row: Any) -> dict[str, Any]:
            calls, failures, tokens_in, tokens_out, cost = row
            return {
                "calls": int(calls),
                "failed": int(failures),
                "tokens_in": int(tokens_in),
                "tokens_out": int(tokens_out),
                "cost_usd": float(cost) if cost is not None else None,
            }

        return {
            **shaped(total),
            "by_model": {row[0]: shaped(row[1:]) for row in sorted(rows, key=lambda r: r[0])},
        }

    # -- inside a transaction -----------------------------------------------------------

    def _lock_pending(self, conn: sa.Connection, directive_id: str, what: str) -> None:
        """The directive's row, locked on PostgreSQL (SQLite writers are serial), and
        refused unless PENDING."""
        query = sa.select(directives.c.status).where(directives.c.id == directive_id)
        if self._postgres:
            query = query.with_for_update()
        status = conn.execute(query).scalar()
        if status is None:
            raise _missing(directive_id)
        if status != DirectiveStatus.PENDING.value:
            raise TaskError(
                f"directive {directive_id} is already {status}; cannot {what} it",
                fix="only PENDING directives can be applied or rejected",
            )

    def _apply_in(
        self, conn: sa.Connection, directive_id: str, specs: Sequence[NewTask], actor: str
    ) -> list[Task]:
        now = self._now()
        if any(spec.id is None for spec in specs):
            raise ArgumentRefusedError(
                "directive tasks need their ids", fix="prepare them with capataz.intake"
            )
        ids = [str(spec.id) for spec in specs]
        final = _task_sql.insert_batch(conn, specs, ids, now, actor)
        loaded = {task.id: task for task in _task_sql.load(conn, sa.true(), final)}
        if any(task.status is TaskState.READY for task in loaded.values()):
            self._notify_ready(conn)
        conn.execute(
            sa.update(directives)
            .where(directives.c.id == directive_id)
            .values(
                status=DirectiveStatus.APPLIED.value,
                decided_by=actor,
                decided_at=now,
                created_task_ids=final,
            )
        )
        self._audit(conn, actor, "directive.applied", directive_id, tasks=final)
        self._event(
            conn,
            EventType.DIRECTIVE_DECIDED,
            directive_id=directive_id,
            status=DirectiveStatus.APPLIED.value,
            decided_by=actor,
            tasks=final,
        )
        return [loaded[tid] for tid in final]

    def _load(self, conn: sa.Connection, directive_id: str) -> Directive:
        row = conn.execute(sa.select(directives).where(directives.c.id == directive_id)).first()
        if row is None:
            raise _missing(directive_id)
        return Directive.from_row(row)

    # Last: a method named ``list`` would shadow the builtin in annotations below it.
    def list(
        self, status: DirectiveStatus | str | None = None, *, limit: int = 50
    ) -> list[Directive]:
        """Newest first, all or those in one status (at most ``limit``)."""
        return self.page(status, limit=limit)[0]
