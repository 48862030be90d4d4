"""Run records: steps, the log tail, the details a runner reports, and reading runs
back. Part of :class:`capataz.store.manager.Store` (see ``_base``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.redaction import redact, redact_data
from capataz.store import _events, _lease_sql
from capataz.store._base import StoreBase
from capataz.store.records import RunDetail, RunDetails, RunInfo, RunRecord, StepInfo
from capataz.store.schema import (
    UTCDateTime,
    decisions,
    escalations,
    file_changes,
    runs,
    steps,
    tasks,
    violations,
)
from capataz.store.statuses import RUN_FILTERS, RunState, RunStatus, TaskState

__all__ = ["LOG_TAIL_CHARS", "RunsMixin", "detail_rows", "detail_values", "insert_details"]

# runs.log_tail keeps the last 64 Ki characters of a run's output (64 KiB of ASCII).
LOG_TAIL_CHARS = 64 * 1024

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
    runs.c.result_commit, runs.c.landed_commit,
)  # fmt: skip
_RUNS_WITH_TASKS = runs.join(tasks, tasks.c.id == runs.c.task_id)
_TEXT = sa.bindparam("text", type_=sa.Text())
_GROWN = sa.func.coalesce(runs.c.log_tail, "") + _TEXT
_APPEND_LOG = {
    postgres: sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"))
    .values(
        log_tail=sa.func.right(_GROWN, LOG_TAIL_CHARS)
        if postgres
        else sa.func.substr(_GROWN, -LOG_TAIL_CHARS)
    )
    for postgres in (False, True)
}
_FILE_CHANGE_KEYS = ("path", "kind", "lines_added", "lines_removed", "binary")
_VIOLATION_KEYS = ("type", "severity", "file", "line", "details", "suggestion", "gate", "phase")


def _run_filter(status: str) -> Any:
    try:
        return _RUN_FILTER[status]
    except KeyError:
        raise TaskError(
            f"no run status {status!r}", fix=f"use one of {', '.join(RUN_FILTERS)}"
        ) from None


def _no_run(run_id: str) -> TaskError:
    return TaskError(f"no run {run_id}", fix="`capataz run list` shows the run ids")


# A run's diff is kept up to this size (the whole result is in git either way).
DIFF_CHARS = 256 * 1024


class RunsMixin(StoreBase):
    def step_started(self, run_id: str, phase: str, *, seq: int | None = None) -> bool:
        """Record that ``phase`` (prepare, pre-gates, execute, ...) of the run began.
        ``seq``: see :meth:`_first_time`; False when that record was stored already."""
        now = self.clock()
        with self._write() as conn:
            if not self._first_time(conn, run_id, seq):
                return False
            _start_step(conn, run_id, phase, now)
        return True

    def step_finished(
        self, run_id: str, phase: str, outcome: str, *, seq: int | None = None
    ) -> bool:
        """Finish the newest unfinished step of ``phase`` with ``outcome``; a phase that
        was never started is recorded as a step that began and ended now."""
        now = self.clock()
        with self._write() as conn:
            if not self._first_time(conn, run_id, seq):
                return False
            _finish_step(conn, run_id, phase, redact(outcome), now)
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
            self._append_text(conn, run_id, text)
            _events.emit_for_run(conn, EventType.RUN_LOG, at=self.clock(), run_id=run_id, text=text)
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
                raise _no_run(run_id)
            last, held = row.record_seq or 0, bool(row.current)
            fresh: dict[int, RunRecord] = {}
            for record in records:
                if record.seq > last:
                    fresh.setdefault(record.seq, record)
            if not fresh:
                return 0, held
            now = self.clock()
            log_text: list[str] = []
            for seq in sorted(fresh):
                record = fresh[seq]
                if record.kind == "log":
                    if record.text:
                        text = redact(record.text)
                        log_text.append(text)
                        _events.emit_for_run(
                            conn, EventType.RUN_LOG, at=now, run_id=run_id, text=text
                        )
                elif record.status == "started":
                    _start_step(conn, run_id, record.phase, now)
                else:
                    _finish_step(conn, run_id, record.phase, redact(record.outcome), now)
            if log_text:  # the tail is one column: one UPDATE for every chunk
                self._append_text(conn, run_id, "".join(log_text))
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(record_seq=max(fresh)))
        return len(fresh), held

    def _append_text(self, conn: sa.Connection, run_id: str, text: str) -> None:
        params = {"run_id": run_id, "text": text[-LOG_TAIL_CHARS:]}
        if conn.execute(_APPEND_LOG[self._postgres], params).rowcount == 0:
            raise _no_run(run_id)

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
            raise _no_run(run_id)
        return False

    def list_runs(
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
            raise TaskError("limit and offset cannot be negative", fix="use 0 or more")
        query = sa.select(*_RUN_COLUMNS).select_from(_RUNS_WITH_TASKS)
        if task_id is not None:
            query = query.where(runs.c.task_id == task_id)
        if status is not None:
            query = query.where(_run_filter(status))
        query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [RunInfo(**row._asdict()) for row in rows]

    def count_runs(self, *, task_id: str | None = None, status: str | None = None) -> int:
        """How many runs :meth:`list_runs` pages through with the same filters: one
        COUNT in SQL, for the API's X-Total-Count."""
        query = sa.select(sa.func.count()).select_from(runs)
        if task_id is not None:
            query = query.where(runs.c.task_id == task_id)
        if status is not None:
            query = query.where(_run_filter(status))
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def run_statistics(self, recent: int = 500) -> dict[str, Any]:
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

    def get_run(self, run_id: str) -> RunDetail:
        """One run with its steps, file changes, violations, decisions, escalations and
        log tail."""
        query = sa.select(*_RUN_COLUMNS, runs.c.log_tail, runs.c.diff).select_from(_RUNS_WITH_TASKS)
        with self._read() as conn:
            row = conn.execute(query.where(runs.c.id == run_id)).first()
            if row is None:
                raise _no_run(run_id)
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


def _start_step(conn: sa.Connection, run_id: str, phase: str, now: datetime) -> None:
    if not _insert_step(conn, run_id, phase, now, ended=False):
        raise _no_run(run_id)
    _events.emit_for_run(
        conn, EventType.RUN_STEP, at=now, run_id=run_id, step=phase, status="started"
    )


def _finish_step(conn: sa.Connection, run_id: str, phase: str, outcome: str, now: datetime) -> None:
    """Finish the newest open step of ``phase`` (``outcome`` already redacted)."""
    newest_open = (
        sa.select(sa.func.max(steps.c.id))
        .where(steps.c.run_id == run_id, steps.c.phase == phase, steps.c.ended_at.is_(None))
        .scalar_subquery()
    )
    finished = conn.execute(
        sa.update(steps).where(steps.c.id == newest_open).values(ended_at=now, outcome=outcome)
    )
    if finished.rowcount == 0 and not _insert_step(
        conn, run_id, phase, now, ended=True, outcome=outcome
    ):
        raise _no_run(run_id)
    _events.emit_for_run(
        conn,
        EventType.RUN_STEP,
        at=now,
        run_id=run_id,
        step=phase,
        status="finished",
        outcome=outcome,
    )


def _insert_step(
    conn: sa.Connection,
    run_id: str,
    phase: str,
    now: datetime,
    *,
    ended: bool,
    outcome: str | None = None,
) -> bool:
    """Insert a step of ``run_id`` if that run exists; whether it did."""
    at = sa.literal(now, UTCDateTime())
    values = sa.select(
        runs.c.id,
        sa.literal(phase, sa.Text()),
        at,
        at if ended else sa.null(),
        sa.literal(outcome, sa.Text()) if ended else sa.null(),
    ).where(runs.c.id == run_id)
    columns = ["run_id", "phase", "started_at", "ended_at", "outcome"]
    # RETURNING, not rowcount: psycopg reports no rowcount for INSERT … SELECT.
    inserted = sa.insert(steps).from_select(columns, values).returning(steps.c.id)
    return conn.execute(inserted).first() is not None


# -- details reported with complete() ---------------------------------------------------


def detail_values(details: RunDetails) -> dict[str, Any]:
    """The columns of the runs row that ``details`` sets."""
    return {
        "result": details.outcome,
        "exit_code": details.exit_code,
        "wall_seconds": details.wall_seconds,
        "cpu_seconds": details.cpu_seconds,
        "peak_memory_bytes": details.peak_memory_bytes,
        "result_commit": details.result_commit,
        "landed_commit": details.landed_commit,
        "diff": cap_diff(redact(details.diff) if details.diff else details.diff),
    }


def cap_diff(diff: str | None) -> str | None:
    """A diff as kept in the database: at most ``DIFF_CHARS``, saying so when cut."""
    if diff is None or len(diff) <= DIFF_CHARS:
        return diff
    return diff[:DIFF_CHARS] + f"\n… diff cut at {DIFF_CHARS} characters ({len(diff)} in all)\n"


DetailRows = dict[str, list[dict[str, Any]]]


def detail_rows(details: RunDetails, now: datetime) -> DetailRows:
    """The child rows of ``details`` (without their run id), checked before anything is
    written: a missing required key is a TaskError naming it. Secret values in them
    are masked."""
    details = replace(
        details,
        file_changes=redact_data(details.file_changes),
        violations=redact_data(details.violations),
        decisions=redact_data(details.decisions),
    )
    return {
        "file_changes": [
            {
                "path": str(_required(item, "path", "file change")),
                "kind": str(_required(item, "kind", "file change")),
                "lines_added": int(item.get("lines_added") or 0),
                "lines_removed": int(item.get("lines_removed") or 0),
                "binary": bool(item.get("binary", False)),
            }
            for item in details.file_changes
        ],
        "violations": [
            {
                "type": str(_required(item, "type", "violation")),
                "severity": str(_required(item, "severity", "violation")),
                "details": str(item.get("details") or ""),
                "suggestion": str(item.get("suggestion") or ""),
                "file": None if item.get("file") is None else str(item["file"]),
                "line": None if item.get("line") is None else int(item["line"]),
                "gate": str(item.get("gate") or "policy"),
                "phase": str(item.get("phase") or "post"),
            }
            for item in details.violations
        ],
        "decisions": [
            {
                "phase": str(_required(item, "phase", "decision")),
                "decision": str(_required(item, "decision", "decision")),
                "reason": str(item.get("reason") or ""),
                "at": _timestamp(item.get("timestamp"), now),
            }
            for item in details.decisions
        ],
    }


def insert_details(conn: sa.Connection, run_id: str, rows: DetailRows) -> None:
    for name, table in (
        ("file_changes", file_changes),
        ("violations", violations),
        ("decisions", decisions),
    ):
        if rows[name]:
            conn.execute(sa.insert(table), [{**row, "run_id": run_id} for row in rows[name]])


def _required(item: Mapping[str, Any], key: str, what: str) -> Any:
    value = item.get(key)
    if value is None:
        raise TaskError(
            f"a {what} in the run details has no {key!r}", fix=f"give every {what} a {key}"
        )
    return value


def _timestamp(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise TaskError(
                f"decision timestamp {value!r} is not ISO 8601", fix="send a datetime or ISO text"
            ) from None
    if not isinstance(value, datetime):
        raise TaskError(f"decision timestamp {value!r} is not a time", fix="send a datetime")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
