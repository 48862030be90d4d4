"""The raw-sqlite3 report path (``_sqlite_reports``) against the SQLAlchemy path, the
reference: the same sequence of reports on two fresh SQLite stores, one of them switched
to the SQLAlchemy path, must leave the same rows, byte for byte."""

from __future__ import annotations

import itertools
import random
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from capataz import redaction
from capataz.models import utcnow
from capataz.store import NewTask, RunDetails, Store, TaskState, _lease_sql, _sqlite_reports
from capataz.store._run_sql import detail_rows
from capataz.store._sqlite_reports import (
    _CASCADE,
    _DETAIL_TABLES,
    _ENDED,
    _RELEASE,
    _RETRIED,
    _TASK_ROW,
)
from capataz.store.errors import ArgumentRefusedError

from .conftest import Clock

_COMPLETE = _sqlite_reports.complete
_SECRET = "sk-report-secret-value"
_TABLES = {
    "tasks": "id",
    "task_dependencies": "task_id, depends_on_id",
    "runs": "id",
    "escalations": "id",
    "file_changes": "id",
    "violations": "id",
    "decisions": "id",
    "events": "id",
    "audit": "seq",
}


def _run_sequence(
    path: Path, start: datetime, monkeypatch: pytest.MonkeyPatch, *, fast: bool
) -> list[bool]:
    """Every kind of report the fast path covers, and one it leaves to the SQLAlchemy
    path (a stale token); returns what ``_sqlite_reports.complete`` answered."""
    clock = Clock()
    clock.now = start
    numbers = itertools.count(1)
    monkeypatch.setattr(_lease_sql, "new_run_id", lambda: f"run-{next(numbers):04d}")
    answers: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> bool:
        answers.append(_COMPLETE(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(_sqlite_reports, "complete", spy)
    random.seed(20261207)  # the retry's jitter
    store = Store.open(f"sqlite:///{path}", clock=clock)
    store.leases._sqlite_fast_reports = fast
    try:
        store.tasks.add_many(
            [
                NewTask("a", "x", id="a", priority=9),
                NewTask("b", "x", id="b", depends_on=("a",)),
                NewTask("e", "x", id="e"),
                NewTask("d", "x", id="d", depends_on=("a", "e")),
                NewTask("f", "x", id="f", max_attempts=2),
                NewTask("g", "x", id="g", depends_on=("f",)),
                NewTask("h", "x", id="h", depends_on=("g",)),
                NewTask("m", "x", id="m"),
                NewTask("n", "x", id="n", depends_on=("m",)),
                NewTask("p", "x", id="p"),
                NewTask("q", "x", id="q"),
                NewTask("r", "x", id="r"),
            ]
        )
        # Done through the claim of the queue: b is released, d still waits for e.
        a = store.leases.claim("runner-1")
        assert a is not None and a.id == "a"
        assert store.leases.complete("a", a.fencing_token, "done", "all good")
        # Failed with an attempt left: back to ready after a backoff; then failed for
        # good, which blocks g and, through g, h.
        f = store.leases.claim_task("f", "runner-2")
        assert store.leases.complete("f", f.fencing_token, TaskState.FAILED, f"no {_SECRET}")
        clock.advance(3600)
        f = store.leases.claim_task("f", "runner-2")
        assert store.leases.complete("f", f.fencing_token, "failed", "tests fail again")
        # Escalated, then done with a decision (by an actor): the escalation closes and
        # d is released.
        e = store.leases.claim_task("e", "runner-3")
        assert store.escalations.open("e", e.fencing_token, "may I delete prod?")
        assert store.leases.complete(
            "e", e.fencing_token, "done", "asked", decision=f"ok {_SECRET}", actor="someone"
        )
        # Cancelled by its runner (n is cancelled too), escalated as an ending, blocked.
        m = store.leases.claim_task("m", "runner-1")
        assert store.leases.complete("m", m.fencing_token, "cancelled", None)
        p = store.leases.claim_task("p", "runner-1")
        assert store.leases.complete("p", p.fencing_token, "escalated", "need a human")
        q = store.leases.claim_task("q", "runner-1")
        assert store.leases.complete("q", q.fencing_token, "blocked", "no access", decision="x")
        # With details (what a pipeline's runner reports): refused ones write nothing.
        r = store.leases.claim_task("r", "runner-4")
        refused = RunDetails("landed", file_changes=[{"kind": "added"}])
        with pytest.raises(ArgumentRefusedError, match="'path'"):
            store.leases.complete("r", r.fencing_token, "done", details=refused)
        assert store.leases.complete(
            "r", r.fencing_token, "done", "landed", decision="landed", details=_DETAILS
        )
        # Not the holder: the SQLAlchemy path refuses (and audits), then accepts a retry.
        assert not store.leases.complete("q", q.fencing_token + 1, "done")
        assert store.leases.complete("q", q.fencing_token, "blocked", "no access")
        assert store.audit.verify() is None
    finally:
        store.close()
    return answers


_DETAILS = RunDetails(
    "landed",
    exit_code=0,
    wall_seconds=1.5,
    cpu_seconds=2,
    peak_memory_bytes=1 << 20,
    result_commit="abc123",
    landed_commit="def456",
    file_changes=[
        {"path": "a.py", "kind": "modified", "lines_added": 3, "lines_removed": 1},
        {"path": "logo.png", "kind": "added", "binary": True},
    ],
    violations=[
        {"type": "secret", "severity": "high", "file": "a.py", "line": 3, "details": _SECRET},
        {"type": "size", "severity": "low", "gate": "diff", "phase": "pre"},
    ],
    decisions=[
        {
            "phase": "gate",
            "decision": "pass",
            "reason": "ok",
            "timestamp": "2026-01-02T03:04:05+02:00",
        },
        {"phase": "land", "decision": "landed"},
    ],
    diff=f"+token = {_SECRET!r}\n",
    tokens_in=1200,
    tokens_out=340,
    cost_usd=0.0123,
    model="some-model",
    turns=4,
)


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            for table, order in _TABLES.items()
        }
    finally:
        db.close()


def test_the_fast_report_path_writes_what_the_sqlalchemy_path_writes(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redaction.add({"REPORT_KEY": _SECRET})  # masked in reasons, events and audit
    start = utcnow()
    paths = {}
    answers = {}
    for fast in (False, True):
        paths[fast] = tmp_path / f"fast-{fast}.db"
        shutil.copyfile(sqlite_template, paths[fast])
        answers[fast] = _run_sequence(paths[fast], start, monkeypatch, fast=fast)
    assert answers[False] == []  # switched off: never tried
    # Seven reports on the fast path; the refused one and its retry fall back.
    # Eight reports on the fast path (the refused details raise there, as on the other
    # path); the refused one and its retry fall back.
    assert answers[True] == [True] * 8 + [False, False]
    slow, fast_rows = _rows(paths[False]), _rows(paths[True])
    for table in _TABLES:
        assert fast_rows[table] == slow[table], table
    # The sequence did what it says.
    status = {row[0]: row[4] for row in slow["tasks"]}
    assert status == {
        "a": "done",
        "b": "ready",
        "d": "ready",
        "e": "done",
        "f": "failed",
        "g": "blocked",
        "h": "blocked",
        "m": "cancelled",
        "n": "cancelled",
        "p": "escalated",
        "q": "blocked",
        "r": "done",
    }
    actions = [row[3] for row in slow["audit"]]
    for action in ("task.retry", "task.failed", "task.ready", "task.blocked", "task.cancelled"):
        assert action in actions
    assert actions[-1] == "task.complete_refused"
    assert all(row[-2] is not None for row in slow["escalations"])  # closed
    assert {row[2] for row in slow["events"]} >= {"decision", "run.finished", "task.state"}
    assert (len(slow["file_changes"]), len(slow["violations"]), len(slow["decisions"])) == (2, 2, 2)
    masked = ("events", "audit", "violations")
    assert not any(_SECRET in repr(row) for table in masked for row in slow[table])
    db = sqlite3.connect(paths[True])
    try:
        diff, result = db.execute("SELECT diff, result FROM runs WHERE task_id = 'r'").fetchone()
    finally:
        db.close()
    assert result == "landed" and "***REPORT_KEY***" in diff and _SECRET not in diff


def test_the_fast_report_sql_uses_the_contract_state_names() -> None:
    assert "status, fencing_token" in _TASK_ROW
    assert all("lease_owner = NULL" in sql for sql in (_ENDED, _RETRIED))
    for sql in (_RELEASE, _CASCADE):
        assert f"status = '{TaskState.PENDING.value}'" in sql
    assert f"status = '{TaskState.READY.value}'" in _RELEASE
    assert f"status != '{TaskState.DONE.value}'" in _RELEASE


def test_the_fast_report_path_inserts_every_column_of_the_details_rows() -> None:
    rows = detail_rows(_DETAILS, utcnow())
    assert {table: set(found[0]) for table, found in rows.items()} == {
        table: set(columns) for table, columns in _DETAIL_TABLES.items()
    }
