"""A remote runner's outbox in one transaction (``store.runs.record_batch``): the same
``seq`` de-duplication as one record at a time, one advance of ``record_seq``, and
events per record in order, on both databases."""

from __future__ import annotations

import pytest

from capataz.errors import TaskError
from capataz.store import ClaimedTask, RunRecord, Store

START = RunRecord(1, "step", phase="prepare", status="started")
HELLO = RunRecord(2, "log", text="hello\n")
DONE = RunRecord(3, "step", phase="prepare", status="finished", outcome="ok")
WORLD = RunRecord(4, "log", text="world\n")


def _claim(store: Store) -> ClaimedTask:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    return claimed


def test_a_batch_lands_once_in_order_with_its_events(store: Store) -> None:
    claimed = _claim(store)
    run = claimed.run_id
    after = store.events.last_id()
    assert store.runs.record_batch(run, [START, HELLO, DONE]) == (3, True)
    # A resent batch (lost answer) with one new record: only that one is stored.
    assert store.runs.record_batch(run, [HELLO, DONE, WORLD, WORLD]) == (1, True)
    assert store.runs.record_batch(run, [WORLD]) == (0, True)
    assert not store.runs.append_log(run, "late\n", seq=4)  # the one-record path agrees

    detail = store.runs.get(run)
    assert detail.log_tail == "hello\nworld\n"
    assert [(s.phase, s.outcome) for s in detail.steps] == [("prepare", "ok")]
    events = [
        (e.type, e.data.get("status") or e.data.get("text"))
        for e in store.events.after(after, run_id=run)
    ]
    assert events == [
        ("run.step", "started"),
        ("run.log", "hello\n"),
        ("run.step", "finished"),
        ("run.log", "world\n"),
    ]


def test_a_batch_says_when_the_lease_is_gone_and_refuses_unknown_runs(store: Store) -> None:
    claimed = _claim(store)
    assert store.leases.complete(claimed.id, claimed.fencing_token, "done", "landed")
    assert store.runs.record_batch(claimed.run_id, [HELLO]) == (1, False)
    with pytest.raises(TaskError, match="no run run-nope"):
        store.runs.record_batch("run-nope", [HELLO])
