"""On PostgreSQL "done" reported by the lease's holder is written by one statement
(``_pg_reports``); everything else by the general path. Whoever reads the store must not
be able to tell which wrote it: the same report through both leaves the same rows,
the same audit entries and the same events, in the same order."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from capataz import redaction
from capataz.store import NewTask, RunDetails, Store
from capataz.store._leases import Leases
from capataz.store.schema import audit, audit_pending, escalations, events, runs, tasks

from .conftest import Clock

SECRET = "sk-live-0123456789abcdefghijklmnop"
DETAILS = RunDetails(
    outcome="landed",
    exit_code=0,
    wall_seconds=1.5,
    result_commit="abc123",
    landed_commit="def456",
    file_changes=[{"path": "src/a.py", "kind": "modified", "lines_added": 3}],
    violations=[{"type": "TOO_MANY_LINES", "severity": "low", "details": f"key {SECRET}"}],
    decisions=[{"phase": "decide", "decision": "COMPLETED", "reason": "clean"}],
    diff=f"+token = {SECRET}\n",
)
VOLATILE = {"id", "seq", "at", "hash", "prev_hash", "updated_at", "created_at"}
VOLATILE |= {
    "started_at",
    "ended_at",
    "opened_at",
    "closed_at",
    "run_id",
    "lease_expires_at",
    "run_after",
}


def _rows(store: Store, table: sa.Table, order: Any) -> list[dict[str, Any]]:
    with store._shared.engine.connect() as conn:
        found = conn.execute(sa.select(table).order_by(order)).mappings().all()
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in found]


def _everything(store: Store) -> Any:
    """Every row that matters, run ids numbered in order of appearance (they are random)."""
    store.audit.seal()
    found = {
        "tasks": _rows(store, tasks, tasks.c.id),
        "runs": _rows(store, runs, runs.c.task_id),
        "escalations": _rows(store, escalations, escalations.c.id),
        "audit": _rows(store, audit, audit.c.seq),
        "pending": _rows(store, audit_pending, audit_pending.c.id),
        "events": _rows(store, events, events.c.id),
    }
    text = json.dumps(found, default=str, sort_keys=True)
    numbered: dict[str, str] = {}
    for run_id in re.findall(r"run-[0-9a-f]{16}", text):
        numbered.setdefault(run_id, f"run-{len(numbered)}")
    return json.loads(re.sub(r"run-[0-9a-f]{16}", lambda m: numbered[m.group(0)], text))


def _scenario(store: Store) -> None:
    """A done with dependents (one released, one still waiting), a done after an
    escalation with a decision, reason and details (secrets in them), a stale report."""
    store.tasks.add_many(
        [
            NewTask("a", "x", id="a"),
            NewTask("b", "x", id="b"),
            NewTask("e", "x", id="e"),
            NewTask("c", "x", id="c", depends_on=["a"]),
            NewTask("d", "x", id="d", depends_on=["a", "b"]),
        ]
    )
    held = {task.id: task for task in (store.leases.claim("r1", 600) for _ in range(3)) if task}
    assert sorted(held) == ["a", "b", "e"]
    assert store.leases.complete("a", held["a"].fencing_token, "done", "finished")
    assert store.escalations.open("e", held["e"].fencing_token, "needs a look")
    assert store.leases.complete(
        "e",
        held["e"].fencing_token,
        "done",
        f"approved, {SECRET}",
        decision="COMPLETED",
        actor="operator",
        details=DETAILS,
    )
    assert store.leases.complete("a", held["a"].fencing_token, "done", "finished")  # a retry
    assert not store.leases.complete("b", held["b"].fencing_token + 1, "done")  # stale


@pytest.fixture
def two_stores(pg_admin_url: str, pg_template: str) -> Iterator[tuple[Store, Store]]:
    from .conftest import _create_database, _drop_database, _url_of

    names = [_create_database(pg_admin_url, template=pg_template) for _ in range(2)]
    opened = [Store.open(_url_of(pg_admin_url, name), clock=Clock()) for name in names]
    yield opened[0], opened[1]
    for store in opened:
        store.close()
    for name in names:
        _drop_database(pg_admin_url, name)


def test_done_in_one_statement_writes_what_the_general_path_writes(
    two_stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, general = two_stores
    redaction.install(lambda: {"API_KEY": SECRET}, refresh=3600.0)
    try:
        _both(fast, general, monkeypatch)
    finally:
        redaction.install(None)


def _both(fast: Store, general: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _scenario(fast)
    with monkeypatch.context() as patched:
        patched.setattr(Leases, "_done_in_one", lambda *_args, **_kwargs: False)
        _scenario(general)
    written, expected = _everything(fast), _everything(general)
    assert written == expected
    assert [row["type"] for row in written["events"]].count("decision") == 1
    assert SECRET not in repr(written)
    assert fast.audit.verify() is None
