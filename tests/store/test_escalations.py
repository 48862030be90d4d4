"""Escalations through the database: the runner keeps its lease while a human decides,
and heartbeat, complete, sweep, cancel and requeue treat the task like a running one."""

from __future__ import annotations

import io

import pytest

from capataz.errors import TaskError
from capataz.store import ClaimedTask, RunStatus, Store, TaskState

from .conftest import Clock


def _escalated(store: Store, task_id: str = "a", max_attempts: int = 3) -> ClaimedTask:
    store.tasks.add(task_id, "x", id=task_id, max_attempts=max_attempts)
    claimed = store.leases.claim("runner-1", lease_seconds=30)
    assert claimed is not None
    assert store.escalations.open(task_id, claimed.fencing_token, "medium: diff touches docs")
    return claimed


def test_an_answer_reaches_the_runner_and_the_task_runs_on(store: Store) -> None:
    claimed = _escalated(store)
    task = store.tasks.get("a")
    assert (task.status, task.reason) == (TaskState.ESCALATED, "medium: diff touches docs")
    assert store.escalations.open("a", claimed.fencing_token, "again")  # already open
    assert store.escalations.poll("a", claimed.fencing_token) is None
    assert store.leases.is_current("a", claimed.fencing_token)
    store.escalations.answer("a", "Approve", note="looks fine", decided_by="ana")
    answer = store.escalations.poll("a", claimed.fencing_token)
    assert answer is not None
    assert (answer.decision, answer.note, answer.decided_by) == ("approve", "looks fine", "ana")
    assert store.tasks.get("a").status is TaskState.RUNNING
    with pytest.raises(TaskError, match="is running, not waiting for a decision"):
        store.escalations.answer("a", "reject")
    assert store.leases.complete("a", claimed.fencing_token, "done")
    escalation = store.runs.get(claimed.run_id).escalations
    assert [(e["reason"], e["decision"], e["decided_by"]) for e in escalation] == [
        ("medium: diff touches docs", "approve", "ana")
    ]
    out = io.StringIO()
    store.audit.export(out)
    assert '"action":"escalation.opened"' in out.getvalue()
    assert '"action":"escalation.answered"' in out.getvalue()
    assert store.audit.verify() is None


def test_bad_answers_are_refused_with_a_fix(store: Store) -> None:
    store.tasks.add("idle", "x", id="idle")
    with pytest.raises(TaskError, match="'maybe' is not an escalation decision") as caught:
        store.escalations.answer("idle", "maybe")
    assert caught.value.fix is not None
    assert "approve, reject, modify, abort" in caught.value.fix
    with pytest.raises(TaskError, match="task idle is ready, not waiting for a decision"):
        store.escalations.answer("idle", "approve")
    with pytest.raises(TaskError, match="no task t-missing"):
        store.escalations.answer("t-missing", "approve")


def test_a_stale_token_cannot_escalate(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert not store.escalations.open("a", claimed.fencing_token + 1, "why")
    assert store.tasks.get("a").status is TaskState.RUNNING


def test_heartbeat_and_complete_work_while_escalated(store: Store, clock: Clock) -> None:
    claimed = _escalated(store)
    for _ in range(4):
        clock.advance(20)
        assert store.leases.heartbeat("a", claimed.fencing_token, lease_seconds=30)
        assert store.sweep() == []
    assert store.leases.complete("a", claimed.fencing_token, "blocked", "rejected by a human")
    assert store.tasks.get("a").status is TaskState.BLOCKED
    assert not store.leases.is_current("a", claimed.fencing_token)


def test_sweep_rescues_an_escalated_task_whose_runner_died(store: Store, clock: Clock) -> None:
    claimed = _escalated(store)
    clock.advance(31)
    assert store.sweep() == ["a"]
    assert store.tasks.get("a").status is TaskState.READY
    assert not store.leases.heartbeat("a", claimed.fencing_token)
    answer = store.escalations.poll("a", claimed.fencing_token)
    assert answer is not None
    assert (answer.decision, answer.decided_by) == ("abort", "capataz")
    with pytest.raises(TaskError, match="not waiting for a decision"):
        store.escalations.answer("a", "approve")
    assert store.runs.get(claimed.run_id).status == RunStatus.LOST


def test_cancel_stops_an_escalated_run(store: Store) -> None:
    claimed = _escalated(store)
    store.tasks.cancel("a", "not needed")
    assert not store.leases.is_current("a", claimed.fencing_token)
    assert not store.leases.heartbeat("a", claimed.fencing_token)
    assert not store.leases.complete("a", claimed.fencing_token, "done")
    answer = store.escalations.poll("a", claimed.fencing_token)
    assert answer is not None
    assert answer.decision == "abort"
    run = store.runs.get(claimed.run_id)
    assert (run.status, run.reason) == (RunStatus.CANCELLED, "not needed")


def test_requeue_takes_an_escalated_task_from_its_runner(store: Store) -> None:
    claimed = _escalated(store)
    requeued = store.tasks.requeue("a")
    assert (requeued.status, requeued.attempts, requeued.lease_owner) == (TaskState.READY, 0, None)
    assert not store.leases.is_current("a", claimed.fencing_token)
    assert store.runs.get(claimed.run_id).status == RunStatus.CANCELLED
    again = store.leases.claim("runner-2")
    assert again is not None
    assert again.fencing_token > claimed.fencing_token


def test_a_parked_escalation_without_a_runner_needs_a_requeue(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert store.leases.complete("a", claimed.fencing_token, "escalated", "awaiting human edits")
    assert not store.leases.heartbeat("a", claimed.fencing_token)
    assert not store.leases.is_current("a", claimed.fencing_token)
    with pytest.raises(TaskError, match="no runner is waiting") as caught:
        store.escalations.answer("a", "approve")
    assert caught.value.fix == "`capataz task requeue a` runs it again"
    assert store.tasks.requeue("a").status is TaskState.READY
