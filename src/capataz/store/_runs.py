"""``store.runs``: what a run records as it goes (steps, the log tail) and reading runs
back. The rows a runner reports with its ending are written by ``store.leases``; the
SQL both share is in ``_run_sql``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from capataz.events import EventType
from capataz.redaction import redact
from capataz.store import _event_sql, _lease_sql, _run_sql
from capataz.store._base import StoreBase
from capataz.store.errors import ArgumentRefusedError
from capataz.store.records import RunDetail, RunInfo, RunRecord, StepInfo
from capataz.store.schema import (
    decisions,
    escalations,
    file_changes,
    runs,
    steps,
    tasks,
    violations,
)
from capataz.store.statuses import RUN_FILTERS, RunState, RunStatus, TaskState

__all__ = ["Runs"]

_FINISHED = runs.c.status == RunStatus.FINISHED.value
_BAD_OUTCOMES = (TaskState.FAILED.value, TaskState.BLOCKED.value)
# RunState in SQL: one condition per state (the filter), and the CASE that names it.
_RUN_STATES: dict[str, Any] = {
    RunState.RUNNING: runs.c.status == RunStatus.RUNNING.value,
    RunState.SUCCEEDED: sa.and_(_FINISHED, runs.c.outcome == TaskState.DONE.value),
    RunState.FAILED: sa.and_(_FINISHED, runs.c.outcome.in_(_BAD_OUTCOMES)),
    RunState.ESCALATED: sa.and_(_FINISHED, runs.c.outcome == TaskState.ESCALATED.value),
    RunState.CANCELLED: sa.or_(
        runs.c.status == RunStatus.CANCELLED.value,
        sa.and_(_FINISHED, runs.c.outcome == TaskState.CANCELLED.value),
    ),
    RunState.LOST: runs.c.status == RunStatus.LOST.value,
    RunState.RELEASED: runs.c.status == RunStatus.RELEASED.value,
}
_RUN_FILTER = {**_RUN_STATES, RunStatus.FINISHED.value: _FINISHED}
_RUN_STATE = sa.case(
    *((condition, sa.literal(str(state))) for state, condition in _RUN_STATES.items()),
    else_=runs.c.status,
).label("status")
_RUN_COLUMNS = (
    runs.c.id, runs.c.task_id, tasks.c.title.label("task_title"), runs.c.attempt,
    runs.c.runner_id, runs.c.fencing_token, _RUN_STATE, runs.c.status.label("lifecycle"),
    runs.c.outcome, runs.c.result,
    runs.c.decision, runs.c.reason, runs.c.started_at, runs.c.ended_at, runs.c.exit_code,
    runs.c.wall_seconds, runs.c.cpu_seconds, runs.c.peak_memory_bytes,
    runs.c.result_commit, runs.c.landed_commit, tasks.c.agent, runs.c.tokens_in,
    runs.c.tokens_out, runs.c.cost_usd, runs.c.model, runs.c.turns,
)  # fmt: skip
_RUNS_WITH_TASKS = runs.join(tasks, tasks.c.id == runs.c.task_id)
_FILE_CHANGE_KEYS = ("path", "kind", "lines_added", "lines_removed", "binary")
_VIOLATION_KEYS = ("type", "severity", "file", "line", "details", "suggestion", "gate", "phase")


def _run_filter(status: str) -> Any:
    try:
        return _RUN_FILTER[status]
    except KeyError:
        raise ArgumentRefusedError(
            f"no run status {status!r}", fix=f"use one of {', '.join(RUN_FILTERS)}"
        ) from None


class Runs(StoreBase):
    """Runs (one per attempt of a task) as they happen and as they are looked up."""

    def step_started(self, run_id: str, phase: str, *, seq: int | None = None) -> bool:
        """Record that ``phase`` (prepare, pre-gates, execute, ...) of the run began.
        ``seq``: see :meth:`_first_time`; False when that record was stored already."""
        return self._step(run_id, phase, "started", "", seq)

    def step_finished(
        self, run_id: str, phase: str, outcome: str, *, seq: int | None = None
    ) -> bool:
        """Finish the newest unfinished step of ``phase`` with ``outcome``; a phase that
        was never started is recorded as a step that began and ended now."""
        return self._step(run_id, phase, "finished", outcome, seq)

    def _step(self, run_id: str, phase: str, status: str, outcome: str, seq: int | None) -> bool:
        """One step record in its own transaction (``_run_sql.record_step``)."""
        now = self._now()
        with self._write() as conn:
            if not self._first_time(conn, run_id, seq):
                return False
            _run_sql.record_step(conn, run_id, phase, status, outcome, now=now)
        return True

    def append_log(self, run_id: str, text: str, *, seq: int | None = None) -> bool:
        """Append ``text`` to the run's log tail, which keeps only its last 64 Ki
        characters. One short UPDATE: cheap enough to call twice a second per run.
        ``seq``: see :meth:`_first_time`; False when that chunk was stored already."""
        if not text:
            return False
        text = redact(text)
        with self._write() as conn:
            if not self._first_time(conn, run_id, seq):
                return False
            _run_sql.append_text(conn, run_id, text, postgres=self._postgres)
            _event_sql.emit_for_run(
                conn, EventType.RUN_LOG, at=self._now(), run_id=run_id, text=text
            )
        return True

    def record_batch(self, run_id: str, records: Sequence[RunRecord]) -> tuple[int, bool]:
        """Store a run's numbered steps and log chunks in ONE transaction (a remote
        runner's outbox sends all it holds at once: one request and one commit instead
        of one per record). Records numbered at or below the run's ``record_seq`` were
        stored already and are dropped, like :meth:`_first_time` does one by one; the
        run's number advances once, to the highest stored. Events are emitted per
        record, in ``seq`` order. Returns how many records were stored and whether the
        run's lease is still current (read in the same query, so a remote runner learns
        of a cancel from its outbox's answer without polling); TaskError when the run is
        unknown."""
        current = sa.and_(
            tasks.c.fencing_token == runs.c.fencing_token,
            tasks.c.status.in_(_lease_sql.LEASED),
            tasks.c.lease_owner.is_not(None),
        )
        query = (
            sa.select(runs.c.record_seq, sa.case((current, True), else_=False).label("current"))
            .select_from(_RUNS_WITH_TASKS)
            .where(runs.c.id == run_id)
        )
        if self._postgres:  # two batches of one run apply one after the other
            query = query.with_for_update(of=runs)
        with self._write() as conn:
            row = conn.execute(query).first()
            if row is None:
                raise _run_sql.no_run(run_id)
            last, held = row.record_seq or 0, bool(row.current)
            fresh: dict[int, RunRecord] = {}
            for record in records:
                if record.seq > last:
                    fresh.setdefault(record.seq, record)
            if not fresh:
                return 0, held
            now = self._now()
            log_text: list[str] = []
            for seq in sorted(fresh):
                record = fresh[seq]
                if record.kind == "log":
                    if record.text:
                        text = redact(record.text)
                        log_text.append(text)
                        _event_sql.emit_for_run(
                            conn, EventType.RUN_LOG, at=now, run_id=run_id, text=text
                        )
                else:
                    at = now - timedelta(seconds=record.age) if record.age > 0 else now
                    _run_sql.record_step(
                        conn, run_id, record.phase, record.status, record.outcome, now=at
                    )
            if log_text:  # the tail is one column: one UPDATE for every chunk
                _run_sql.append_text(conn, run_id, "".join(log_text), postgres=self._postgres)
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(record_seq=max(fresh)))
        return len(fresh), held

    def _first_time(self, conn: sa.Connection, run_id: str, seq: int | None) -> bool:
        """A remote runner numbers a run's steps and log chunks 1, 2, 3… and resends
        what a lost answer left unacknowledged; the run keeps the newest number stored,
        in the same transaction as the record, so a resent one is dropped even after a
        server restart or on another server process."""
        if seq is None:
            return True
        advanced = conn.execute(
            sa.update(runs)
            .where(
                runs.c.id == run_id,
                sa.or_(runs.c.record_seq.is_(None), runs.c.record_seq < seq),
            )
            .values(record_seq=seq)
        ).rowcount
        if advanced:
            return True
        if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise _run_sql.no_run(run_id)
        return False

    def count(self, *, task_id: str | None = None, status: str | None = None) -> int:
        """How many runs :meth:`list` pages through with the same filters: one
        COUNT in SQL, for the API's X-Total-Count."""
        query = sa.select(sa.func.count()).select_from(runs)
        if task_id is not None:
            query = query.where(runs.c.task_id == task_id)
        if status is not None:
            query = query.where(_run_filter(status))
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def statistics(self, recent: int = 500) -> dict[str, Any]:
        """Cheap figures for ``/metrics``: decisions recorded so far by kind, and the
        wall-clock seconds of the ``recent`` newest finished runs (a sample, not a
        history: it is read on every scrape)."""
        newest = (
            sa.select(runs.c.wall_seconds)
            .where(runs.c.status == RunStatus.FINISHED.value, runs.c.wall_seconds.is_not(None))
            .order_by(runs.c.started_at.desc())
            .limit(recent)
        )
        with self._read() as conn:
            kinds = conn.execute(
                sa.select(decisions.c.decision, sa.func.count()).group_by(decisions.c.decision)
            ).all()
            durations = conn.execute(newest).scalars().all()
        return {
            "decisions": {str(kind): int(count) for kind, count in kinds},
            "durations": [float(value) for value in durations],
        }

    def usage_by_agent(self) -> dict[str, dict[str, Any]]:
        """What the agents reported they used, summed over every stored run, by the
        task's agent: ``{agent: {tokens_in, tokens_out, cost_usd, runs}}`` where
        ``runs`` counts the runs that reported usage and ``cost_usd`` is None when none
        of them reported a cost. One GROUP BY, for ``/metrics`` and ``capataz
        metrics``; an agent none of whose runs reported usage is absent."""
        reported = sa.or_(runs.c.tokens_in.is_not(None), runs.c.tokens_out.is_not(None))
        query = (
            sa.select(
                tasks.c.agent,
                sa.func.coalesce(sa.func.sum(runs.c.tokens_in), 0),
                sa.func.coalesce(sa.func.sum(runs.c.tokens_out), 0),
                sa.func.sum(runs.c.cost_usd),
                sa.func.count(),
            )
            .select_from(_RUNS_WITH_TASKS)
            .where(reported)
            .group_by(tasks.c.agent)
            .order_by(tasks.c.agent)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return {
            str(agent): {
                "tokens_in": int(tokens_in),
                "tokens_out": int(tokens_out),
                "cost_usd": None if cost is None else float(cost),
                "runs": int(count),
            }
            for agent, tokens_in, tokens_out, cost, count in rows
        }

    def get(self, run_id: str) -> RunDetail:
        """One run with its steps, file changes, violations, decisions, escalations and
        log tail."""
        query = sa.select(*_RUN_COLUMNS, runs.c.log_tail, runs.c.diff).select_from(_RUNS_WITH_TASKS)
        with self._read() as conn:
            row = conn.execute(query.where(runs.c.id == run_id)).first()
            if row is None:
                raise _run_sql.no_run(run_id)
            found = {
                name: conn.execute(
                    sa.select(table).where(table.c.run_id == run_id).order_by(table.c.id)
                ).all()
                for name, table in (
                    ("steps", steps),
                    ("file_changes", file_changes),
                    ("violations", violations),
                    ("decisions", decisions),
                    ("escalations", escalations),
                )
            }
        info = row._asdict()
        info["log_tail"] = info["log_tail"] or ""
        return RunDetail(
            **info,
            steps=[StepInfo(s.phase, s.started_at, s.ended_at, s.outcome) for s in found["steps"]],
            file_changes=[
                {k: r._mapping[k] for k in _FILE_CHANGE_KEYS} for r in found["file_changes"]
            ],
            violations=[{k: r._mapping[k] for k in _VIOLATION_KEYS} for r in found["violations"]],
            decisions=[
                {"phase": d.phase, "decision": d.decision, "reason": d.reason, "timestamp": d.at}
                for d in found["decisions"]
            ],
            escalations=[
                {
                    "reason": e.reason,
                    "opened_at": e.opened_at,
                    "decision": e.decision,
                    "note": e.note,
                    "decided_by": e.decided_by,
                    "answered_at": e.answered_at,
                    "details": e.details,
                }
                for e in found["escalations"]
            ],
        )

    # Last: a method named ``list`` would shadow the builtin in annotations below it.
    def list(
        self,
        *,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunInfo]:
        """Runs newest first, all or of one task, or in one status (a :class:`RunState`,
        or ``finished``), filtered in SQL."""
        if limit < 0 or offset < 0:
            raise ArgumentRefusedError("limit and offset cannot be negative", fix="use 0 or more")
        query = sa.select(*_RUN_COLUMNS).select_from(_RUNS_WITH_TASKS)
        if task_id is not None:
            query = query.where(runs.c.task_id == task_id)
        if status is not None:
            query = query.where(_run_filter(status))
        query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [RunInfo(**row._asdict()) for row in rows]
