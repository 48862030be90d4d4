"""SQL on run rows that ``store.runs`` and ``store.leases`` share, with no transaction
of its own: step records, the log tail, and the details a runner reports with its
ending (checked and redacted before anything is written). Private to the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from capataz.events import EventType
from capataz.redaction import redact, redact_data
from capataz.store import _event_sql
from capataz.store.errors import ArgumentRefusedError, NoSuchRunError
from capataz.store.records import RunDetails
from capataz.store.schema import UTCDateTime, decisions, file_changes, runs, steps, violations

__all__ = [
    "DIFF_CHARS",
    "LOG_TAIL_CHARS",
    "DetailRows",
    "append_text",
    "cap_diff",
    "detail_rows",
    "detail_values",
    "insert_details",
    "no_run",
    "record_details",
    "record_step",
]

# runs.log_tail keeps the last 64 Ki characters of a run's output (64 KiB of ASCII).
LOG_TAIL_CHARS = 64 * 1024
# A run's diff is kept up to this size (the whole result is in git either way).
DIFF_CHARS = 256 * 1024

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


def no_run(run_id: str) -> NoSuchRunError:
    return NoSuchRunError(f"no run {run_id}", fix="`capataz run list` shows the run ids")


def record_step(
    conn: sa.Connection, run_id: str, phase: str, status: str, outcome: str, *, now: datetime
) -> None:
    """Store one step record of ``run_id``: the one shape of a step that started and one
    that finished, whether it comes alone (``store.runs.step_started`` and
    ``step_finished``) or in a batch. ``started`` inserts a step of ``phase``; anything
    else finishes the newest open step of ``phase`` with ``outcome`` (redacted here),
    or records one that began and ended now when none was started. The event stream
    hears it either way; TaskError when the run is unknown."""
    if status == "started":
        stored = _insert_step(conn, run_id, phase, now, ended=False)
        told: dict[str, str] = {"status": "started"}
    else:
        outcome = redact(outcome)
        newest_open = (
            sa.select(sa.func.max(steps.c.id))
            .where(steps.c.run_id == run_id, steps.c.phase == phase, steps.c.ended_at.is_(None))
            .scalar_subquery()
        )
        finished = conn.execute(
            sa.update(steps).where(steps.c.id == newest_open).values(ended_at=now, outcome=outcome)
        )
        stored = finished.rowcount > 0 or _insert_step(
            conn, run_id, phase, now, ended=True, outcome=outcome
        )
        told = {"status": "finished", "outcome": outcome}
    if not stored:
        raise no_run(run_id)
    _event_sql.emit_for_run(conn, EventType.RUN_STEP, at=now, run_id=run_id, step=phase, **told)


def append_text(conn: sa.Connection, run_id: str, text: str, *, postgres: bool) -> None:
    """Grow the run's log tail by ``text`` (already redacted), keeping its last
    ``LOG_TAIL_CHARS``."""
    params = {"run_id": run_id, "text": text[-LOG_TAIL_CHARS:]}
    if conn.execute(_APPEND_LOG[postgres], params).rowcount == 0:
        raise no_run(run_id)


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
        "tokens_in": details.tokens_in,
        "tokens_out": details.tokens_out,
        "cost_usd": details.cost_usd,
        "model": redact(details.model) if details.model else details.model,
        "turns": details.turns,
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


def record_details(conn: sa.Connection, run_id: str, details: RunDetails, rows: DetailRows) -> None:
    """Write ``details`` on the run ``run_id`` (its columns and its child ``rows``, from
    :func:`detail_rows`) when the run was ended without them (``_pg_reports``)."""
    conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**detail_values(details)))
    insert_details(conn, run_id, rows)


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
        raise ArgumentRefusedError(
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
            raise ArgumentRefusedError(
                f"decision timestamp {value!r} is not ISO 8601", fix="send a datetime or ISO text"
            ) from None
    if not isinstance(value, datetime):
        raise ArgumentRefusedError(
            f"decision timestamp {value!r} is not a time", fix="send a datetime"
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)
