"""``store.leases``: claiming, heartbeats, reporting, giving back and rescuing tasks,
and waiting for one to become ready. The statements it composes are in ``_lease_sql``
(and ``_claim_keys``, ``_sqlite_claims`` for claims).

A runner holds a task while it is ``running`` or ``escalated`` under its lease: the
fencing token the claim handed out is the proof, and every write of the runner is
refused once the token is stale (cancelled, rescued by the sweeper, given back)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from capataz.events import EventType
from capataz.redaction import redact
from capataz.store import (
    _claim_keys,
    _lease_sql,
    _pg_claims,
    _pg_reports,
    _run_sql,
    _sqlite_claims,
    _sqlite_reports,
    _task_sql,
)
from capataz.store._base import Shared, StoreBase
from capataz.store.errors import ArgumentRefusedError
from capataz.store.records import ClaimedTask, RunDetails
from capataz.store.schema import UTCDateTime, tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["SQLITE_POLL_SECONDS", "Leases"]

# On SQLite a runner polls: wait_for_ready sleeps at most this long.
SQLITE_POLL_SECONDS = 0.05

_ENDINGS = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.BLOCKED, TaskState.ESCALATED, TaskState.CANCELLED}
)
_IS_CURRENT = sa.select(sa.literal(1)).where(
    tasks.c.id == sa.bindparam("task_id"),
    tasks.c.fencing_token == sa.bindparam("token"),
    tasks.c.status.in_(_lease_sql.LEASED),
    tasks.c.lease_owner.is_not(None),
)

# A reported ending: the lease goes, and a retry waits until ``retry_at``.
_ENDED = (
    sa.update(tasks)
    .where(tasks.c.id == sa.bindparam("task_id"))
    .values(
        status=sa.bindparam("status"),
        reason=sa.bindparam("reason"),
        updated_at=sa.bindparam("updated_at"),
        lease_owner=None,
        lease_expires_at=None,
        run_after=sa.func.coalesce(
            sa.bindparam("retry_at", type_=UTCDateTime()), tasks.c.run_after
        ),
    )
)


class Leases(StoreBase):
    """Who holds which task, under which fencing token, until when."""

    # On SQLite, ``complete`` tries the raw-connection path first (``_sqlite_reports``);
    # a test switches it off to compare with this module's SQLAlchemy path.
    _sqlite_fast_reports = True

    def __init__(
        self, shared: Shared, *, retry_base_seconds: float, retry_cap_seconds: float
    ) -> None:
        super().__init__(shared)
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds

    def claim(
        self,
        runner_id: str,
        lease_seconds: float = 30.0,
        labels: Iterable[str] | None = None,
        *,
        claim_key: str | None = None,
        wait: float = 0.0,
    ) -> ClaimedTask | None:
        """Lease the most urgent ready task (highest priority, then oldest) to
        ``runner_id``, or return None when nothing is due. With ``labels``, only tasks
        whose labels are all among them are taken. One statement picks and updates the
        row: on PostgreSQL the pick skips rows other runners hold (SKIP LOCKED); on
        SQLite the transaction already holds the write lock (and runs on the raw
        connection, see ``_sqlite_claims``). ``claim_key`` makes a retry safe: when
        ``runner_id`` still holds a task under a run claimed with the same key (the
        first answer was lost), that task is returned again, its lease renewed.

        ``wait`` > 0: when nothing is due, keep trying for up to that many seconds,
        woken by :meth:`wait_for_ready` (the same call the control plane's long-poll
        claim offers remote runners; a local runner waits in its own loop instead)."""
        deadline = time.monotonic() + wait
        while True:
            claimed = self._claim_once(runner_id, lease_seconds, labels, claim_key)
            remaining = deadline - time.monotonic()
            if claimed is not None or remaining <= 0:
                return claimed
            if self.waits_for_ready:
                self.wait_for_ready(min(remaining, 1.0))  # due-by-time tasks do not notify
            else:
                time.sleep(min(remaining, 0.25))

    @property
    def claim_wait(self) -> float:
        """0: a claim on the database answers at once; an idle runner waits in its own
        loop (LISTEN or a poll), not inside the claim."""
        return 0.0

    def _claim_once(
        self,
        runner_id: str,
        lease_seconds: float,
        labels: Iterable[str] | None,
        claim_key: str | None,
    ) -> ClaimedTask | None:
        now = self._now()
        expires = now + timedelta(seconds=lease_seconds)
        wanted = None if labels is None else sorted(set(labels))
        connections = self._shared.claim_connections
        if connections is not None:
            run_id = _lease_sql.new_run_id()
            return _sqlite_claims.claim(
                connections,
                runner_id,
                now=now,
                expires=expires,
                labels=wanted,
                run_id=run_id,
                claim_key=claim_key,
            )
        if claim_key is not None:
            with self._write() as conn:
                again = _claim_keys.replay(conn, claim_key, runner_id, expires, postgres=True)
            if again is not None:
                return again
        run_id = _lease_sql.new_run_id()
        params = {
            **_pg_claims.fixed_parameters(),
            "now": now,
            "expires": expires,
            "runner_id": runner_id,
            "told_runner": redact(runner_id),
            "run_id": run_id,
            "claim_key": claim_key,
        }
        if wanted is not None:
            params["runner_labels"] = wanted
        with self._single_statement() as conn:
            row = conn.execute(_pg_claims.claim_statement(labels=wanted is not None), params)
            leased = row.first()
        return None if leased is None else _lease_sql.claimed(leased, run_id, expires)

    def claim_task(
        self,
        task_id: str,
        runner_id: str,
        lease_seconds: float = 30.0,
        *,
        claim_key: str | None = None,
    ) -> ClaimedTask:
        """Lease this one task to ``runner_id`` (``POST /runner/tasks/{id}/claim``),
        whatever its labels. A ClaimConflictError says why not when it is not ready:
        another runner holds it, its dependencies are not done, it is not due yet, or it
        ended. ``claim_key`` makes a retry safe, as for :meth:`claim`."""
        now = self._now()
        expires = now + timedelta(seconds=lease_seconds)
        params = {"task_id": task_id, "now": now, "expires": expires, "runner_id": runner_id}
        with self._write() as conn:
            if claim_key is not None:
                again = _claim_keys.replay(
                    conn, claim_key, runner_id, expires, postgres=self._postgres, task_id=task_id
                )
                if again is not None:
                    return again
            row = conn.execute(_claim_keys.claim_one_statement(), params).first()
            if row is None:
                raise _claim_keys.refusal(conn, task_id, now)
            run_id = self._start_lease(conn, row, runner_id, now, claim_key)
        return _lease_sql.claimed(row, run_id, expires)

    def heartbeat(self, task_id: str, fencing_token: int, lease_seconds: float = 30.0) -> bool:
        """Extend the lease (of a running or escalated task); False means the task is no
        longer this holder's (cancelled, rescued by the sweeper) and the runner should
        stop working on it."""
        now = self._now()
        stmt = (
            sa.update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_(_lease_sql.LEASED),
                tasks.c.fencing_token == fencing_token,
                tasks.c.lease_owner.is_not(None),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def is_current(self, task_id: str, fencing_token: int) -> bool:
        """True while the task is running or escalated under ``fencing_token``: a cheap
        read a runner polls to learn of a cancel or a rescue quickly."""
        with self._read() as conn:
            found = conn.execute(_IS_CURRENT, {"task_id": task_id, "token": fencing_token})
            return found.first() is not None

    def complete(
        self,
        task_id: str,
        fencing_token: int,
        state: TaskState | str,
        reason: str | None = None,
        *,
        decision: str | None = None,
        actor: str | None = None,
        details: RunDetails | None = None,
    ) -> bool:
        """Record how an attempt ended, with the run's ``details`` in the same
        transaction. Refused (False, nothing written but the audited refusal) when
        ``fencing_token`` is not the task's current lease: the runner lost the task and
        someone else may be running it. A failed attempt with attempts left goes back
        to ready after an exponential backoff with jitter. Reporting the same ending
        twice is accepted (True) and writes nothing the second time: a runner that lost
        the answer retries."""
        connections = self._shared.claim_connections
        # The common case on SQLite runs without SQLAlchemy; False: not that case,
        # nothing written, decided below (see ``_sqlite_reports``).
        if (
            connections is not None
            and self._sqlite_fast_reports
            and _sqlite_reports.complete(
                connections,
                task_id,
                fencing_token,
                state,
                reason,
                decision=decision,
                actor=actor,
                details=details,
                clock=self._now,
                retry_delay=self.retry_delay,
            )
        ):
            return True
        state = TaskState(state)
        reason = redact(reason) if reason else reason
        if state not in _ENDINGS:
            raise ArgumentRefusedError(
                f"a run cannot end a task as {state}",
                fix=f"report one of {', '.join(sorted(_ENDINGS))}",
            )
        now = self._now()
        rows = _run_sql.detail_rows(details, now) if details is not None else None
        if self._postgres and state is TaskState.DONE:
            ending = (task_id, fencing_token, now, reason)
            told = (decision, actor)
            if self._done_in_one(ending, told, details=details, rows=rows):
                return True  # else not this lease's: the general path below says why
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
            who = actor or current.lease_owner or "runner"
            if not _lease_sql.holds(current, fencing_token):
                if _claim_keys.ended_as(
                    conn, task_id, fencing_token, RunStatus.FINISHED, state.value
                ):
                    return True  # a retry of a report that landed (its answer was lost)
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
            conn.execute(
                _ENDED,
                {
                    "task_id": task_id,
                    "status": final.value,
                    "reason": reason,
                    "updated_at": now,
                    "retry_at": run_after,
                },
            )
            run_values = _run_sql.detail_values(details) if details is not None else {}
            audited = {
                "reason": reason,
                "attempt": current.attempts,
                "decision": decision,
                "run_after": run_after.isoformat() if run_after else None,
            }
            run_id = self._end_lease(
                conn,
                _Ending(
                    task_id=task_id,
                    fencing_token=fencing_token,
                    was=current.status,
                    status=final,
                    run_status=RunStatus.FINISHED,
                    reason=reason,
                ),
                now=now,
                audited=(
                    who,
                    "task.retry" if final is TaskState.READY else f"task.{final}",
                    audited,
                ),
                run_values={"outcome": state.value, "decision": decision, **run_values},
                details=rows,
                outcome=state.value,
                result=details.outcome if details is not None else None,
                decision=decision,
            )
            if decision is not None:
                self._event(
                    conn,
                    EventType.DECISION,
                    task_id=task_id,
                    run_id=run_id,
                    decision=decision,
                    reason=reason,
                )
            released = _task_sql.release_or_cascade(conn, task_id, final, now, who)
            if final is TaskState.READY or (final is TaskState.DONE and released):
                self._notify_ready(conn)
        return True

    def _done_in_one(
        self,
        ending: tuple[str, int, datetime, str | None],
        told: tuple[str | None, str | None],
        *,
        details: RunDetails | None,
        rows: _run_sql.DetailRows | None,
    ) -> bool:
        """PostgreSQL, "done" reported by the lease's holder (``_pg_reports``). False
        (nothing written) when the lease is not the caller's."""
        with self._write() as conn:
            released = _pg_reports.report_done(conn, ending, told, details=details, rows=rows)
            if released:
                self._notify_ready(conn)
        return released is not None

    def retry_delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from the base up to the cap,
        then a random half of it shaved off so that tasks failing together do not all
        come back in the same instant."""
        doubled = self.retry_base_seconds * 2.0 ** max(attempts - 1, 0)
        ceiling = min(self.retry_cap_seconds, doubled)
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto

    def release(
        self, task_id: str, fencing_token: int, reason: str, *, delay_seconds: float = 0.0
    ) -> bool:
        """Give a task back unfinished (its runner is shutting down, or a credential it
        needs is not provided yet): ready again at once, or after ``delay_seconds``,
        the attempt not counted, its run ended ``released``. Refused (False, and
        audited) when ``fencing_token`` is not the task's current lease; a repeated
        release of the same lease is accepted again."""
        now = self._now()
        with self._write() as conn:
            current = _lease_sql.lock_task(conn, task_id, postgres=self._postgres)
            who = current.lease_owner or "runner"
            if not _lease_sql.holds(current, fencing_token):
                if _claim_keys.ended_as(conn, task_id, fencing_token, RunStatus.RELEASED):
                    return True  # a retry of a release that landed (its answer was lost)
                self._audit(
                    conn,
                    who,
                    "task.release_refused",
                    task_id,
                    fencing_token=fencing_token,
                    current_token=current.fencing_token,
                    status=current.status,
                )
                return False
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    status=TaskState.READY.value,
                    attempts=max(current.attempts - 1, 0),
                    lease_owner=None,
                    lease_expires_at=None,
                    reason=reason,
                    run_after=now + timedelta(seconds=max(delay_seconds, 0.0)),
                    updated_at=now,
                )
            )
            self._end_lease(
                conn,
                _Ending(
                    task_id=task_id,
                    fencing_token=fencing_token,
                    was=current.status,
                    status=TaskState.READY,
                    run_status=RunStatus.RELEASED,
                    reason=reason,
                ),
                now=now,
                audited=(who, "task.released", {"reason": reason, "token": fencing_token}),
            )
            self._notify_ready(conn)
        return True

    def rescue_expired(
        self, now: datetime | None = None, *, actor: str = "sweeper", limit: int = 500
    ) -> list[str]:
        """Rescue running (or escalated) tasks whose lease expired (their runner died or
        hung): back to ready when attempts remain, else failed. The attempt was counted
        at claim. Safe to run from every runner at once: each row is taken by one
        sweeper only. :meth:`capataz.store.Store.sweep` calls it, and tidies up."""
        now = now or self._now()
        expired = _lease_sql.expired_statement(now, limit, postgres=self._postgres)
        rescued: list[tuple[str, TaskState]] = []
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
                audited = {
                    "reason": reason,
                    "status": final.value,
                    "fencing_token": row.fencing_token,
                }
                self._end_lease(
                    conn,
                    _Ending(
                        task_id=row.id,
                        fencing_token=row.fencing_token,
                        was=row.status,
                        status=final,
                        run_status=RunStatus.LOST,
                        reason=reason,
                    ),
                    now=now,
                    audited=(actor, "task.lease_expired", audited),
                )
                _task_sql.release_or_cascade(conn, row.id, final, now, actor)
                rescued.append((row.id, final))
            if any(final is TaskState.READY for _, final in rescued):
                self._notify_ready(conn)
        return [task_id for task_id, _ in rescued]

    # -- waiting for work ----------------------------------------------------------------

    def wait_for_ready(self, timeout: float) -> bool:
        """Block until a task may have become ready or ``timeout`` seconds pass; True
        when woken. PostgreSQL: a LISTEN connection (opened on first use, reopened after
        errors) wakes on the notification every such transaction sends. SQLite: sleeps
        at most 50 ms and returns False; the runner polls."""
        listener = self._shared.listener
        if listener is None:
            time.sleep(min(max(timeout, 0.0), SQLITE_POLL_SECONDS))
            return False
        return listener.wait(timeout)

    def ready_fingerprint(self) -> tuple[int, datetime | None]:
        """How many tasks are ready and due, and the newest change among them: one
        cheap read whose answer changes when a task becomes claimable (added, released,
        rescued, or due by time). The control plane watches it on SQLite, where no
        other process can notify it, to wake its long-poll claims."""
        now = self._now()
        query = sa.select(sa.func.count(), sa.func.max(tasks.c.updated_at)).where(
            tasks.c.status == TaskState.READY.value, tasks.c.run_after <= now
        )
        with self._read() as conn:
            count, newest = conn.execute(query).one()
        return int(count), newest

    @property
    def waits_for_ready(self) -> bool:
        """Whether :meth:`wait_for_ready` blocks until a task may be ready (PostgreSQL's
        LISTEN) rather than sleeping briefly: an idle runner only waits in it then."""
        return self._shared.listener is not None

    # -- the shapes every claim and every ending share ----------------------------------

    def _start_lease(
        self, conn: sa.Connection, row: Any, runner_id: str, now: datetime, claim_key: str | None
    ) -> str:
        """The task of ``row`` was just leased to ``runner_id``: open its run and say so.
        Returns the run's id."""
        run_id = _lease_sql.start_run(conn, row, runner_id, now, claim_key)
        self._tell_lease(conn, row, runner_id, run_id)
        return run_id

    def _tell_lease(self, conn: sa.Connection, row: Any, runner_id: str, run_id: str) -> None:
        """Audit the claim of ``row`` and tell the event stream (its run is open)."""
        payload = {"run_id": run_id, "attempt": row.attempts, "token": row.fencing_token}
        self._audit(conn, runner_id, "task.claimed", row.id, **payload)
        self._event(
            conn,
            EventType.TASK_STATE,
            task_id=row.id,
            run_id=run_id,
            status=TaskState.RUNNING.value,
            was=TaskState.READY.value,
            reason=None,
        )
        self._event(
            conn,
            EventType.RUN_STARTED,
            task_id=row.id,
            run_id=run_id,
            runner_id=runner_id,
            attempt=row.attempts,
        )

    def _end_lease(
        self,
        conn: sa.Connection,
        ending: _Ending,
        *,
        now: datetime,
        audited: tuple[str, str, Mapping[str, Any]],
        run_values: Mapping[str, Any] | None = None,
        details: _run_sql.DetailRows | None = None,
        **told: object,
    ) -> str | None:
        """A task left its lease (its runner reported the ending or gave it back, or the
        lease expired; the task row is updated already): the lease's run ends (with
        ``run_values`` and the ``details`` rows), an escalation the task waited on
        closes, the change is audited (``audited``: actor, action, payload) and the
        event stream hears the task's new state and how its run ended (``told``: more
        of that event's data). Returns the run's id (None: the lease had no run)."""
        run_id = _lease_sql.end_run(
            conn,
            ending.task_id,
            ending.fencing_token,
            ending.run_status,
            now=now,
            reason=ending.reason,
            **(run_values or {}),
        )
        if details is not None and run_id is not None:
            _run_sql.insert_details(conn, run_id, details)
        if ending.was == TaskState.ESCALATED.value:
            _lease_sql.close_escalations(conn, ending.task_id, now)
        actor, action, payload = audited
        self._audit(conn, actor, action, ending.task_id, **payload)
        self._event(
            conn,
            EventType.TASK_STATE,
            task_id=ending.task_id,
            run_id=run_id,
            status=ending.status.value,
            was=ending.was,
            reason=ending.reason,
        )
        if run_id is not None:
            self._event(
                conn,
                EventType.RUN_FINISHED,
                task_id=ending.task_id,
                run_id=run_id,
                status=ending.run_status.value,
                reason=ending.reason,
                **told,
            )
        return run_id


@dataclass(frozen=True)
class _Ending:
    """How a lease ended, for :meth:`Leases._end_lease`."""

    task_id: str
    fencing_token: int
    was: str  # the task's state while leased (running or escalated)
    status: TaskState  # its state now
    run_status: RunStatus  # how the lease's run ended
    reason: str | None
