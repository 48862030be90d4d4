"""Writes a remote runner may repeat after a lost answer, on both databases: claims with
a claim key, claims of one named task (with the reason they are refused), and repeated
complete/release reports."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.store import NewTask, RunStatus, Store, TaskState
from capataz.store._sqlite_claims import _REPLAY
from capataz.store.errors import ClaimConflictError
from capataz.store.schema import runs

from .conftest import Clock


def _runs(store: Store) -> list[sa.Row[tuple[object, ...]]]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(runs.c.id, runs.c.task_id, runs.c.claim_key)).all())


def test_a_claim_retried_with_its_key_returns_the_same_task(store: Store, clock: Clock) -> None:
    store.tasks.add_many([NewTask("a", "x", id="a"), NewTask("b", "x", id="b")])
    first = store.leases.claim("runner-1", 30, claim_key="k1")
    assert first is not None
    clock.advance(10)
    again = store.leases.claim("runner-1", 30, claim_key="k1")
    assert again is not None
    assert (again.id, again.run_id, again.fencing_token) == (
        first.id,
        first.run_id,
        first.fencing_token,
    )
    assert again.lease_expires_at > first.lease_expires_at  # the retry renews the lease
    assert store.tasks.get(first.id).lease_expires_at == again.lease_expires_at
    assert [(r.task_id, r.claim_key) for r in _runs(store)] == [(first.id, "k1")]
    other = store.leases.claim("runner-1", 30, claim_key="k2")  # a new key is a new claim
    assert other is not None and other.id != first.id
    assert store.leases.claim("runner-2", 30, claim_key="k1") is None  # keys are per runner
    assert store.audit.verify() is None


def test_a_key_whose_lease_is_gone_claims_afresh(store: Store, clock: Clock) -> None:
    store.tasks.add_many([NewTask("a", "x", id="a"), NewTask("b", "x", id="b", priority=-1)])
    first = store.leases.claim("runner-1", 5, claim_key="k1")
    assert first is not None and first.id == "a"
    assert store.leases.complete("a", first.fencing_token, "done")
    again = store.leases.claim("runner-1", 5, claim_key="k1")
    assert again is not None and again.id == "b"  # "a" ended: the key claims the next


def test_claim_this_task_and_why_it_is_refused(store: Store, clock: Clock) -> None:
    store.tasks.add_many(
        [
            NewTask("dep", "x", id="dep"),
            NewTask("child", "x", id="child", depends_on=["dep"]),
            NewTask("later", "x", id="later", run_after=clock.now + timedelta(hours=1)),
            NewTask("low", "x", id="low", priority=-5),
        ]
    )
    with pytest.raises(ClaimConflictError, match=r"child waits for .*: dep \(ready\)"):
        store.leases.claim_task("child", "runner-1")
    with pytest.raises(ClaimConflictError, match="not due until"):
        store.leases.claim_task("later", "runner-1")
    low = store.leases.claim_task("low", "runner-1", 30, claim_key="k")  # not the most urgent
    assert (low.id, low.attempt, low.fencing_token) == ("low", 1, 1)
    assert store.leases.claim_task("low", "runner-1", 30, claim_key="k").run_id == low.run_id
    with pytest.raises(ClaimConflictError, match="low is taken: running on runner-1"):
        store.leases.claim_task("low", "runner-2")
    assert store.leases.complete("low", low.fencing_token, "done")
    with pytest.raises(ClaimConflictError, match="already ended done"):
        store.leases.claim_task("low", "runner-1")
    with pytest.raises(TaskError, match="no task nope"):
        store.leases.claim_task("nope", "runner-1")
    assert store.tasks.get("child").status is TaskState.PENDING
    assert store.audit.verify() is None


def test_repeated_reports_are_accepted_once_written(store: Store) -> None:
    store.tasks.add_many([NewTask("a", "x", id="a"), NewTask("b", "x", id="b")])
    a = store.leases.claim_task("a", "runner-1")
    b = store.leases.claim_task("b", "runner-1")
    assert store.leases.complete("a", a.fencing_token, "failed", "boom")
    assert store.leases.complete("a", a.fencing_token, "failed", "boom")  # the retry
    task = store.tasks.get("a")
    assert task.status is TaskState.READY and task.attempts == 1  # not counted twice
    assert not store.leases.complete("a", a.fencing_token, "done")  # not the ending it reported
    assert store.leases.release("b", b.fencing_token, "stopping")
    assert store.leases.release("b", b.fencing_token, "stopping")
    assert not store.leases.complete("b", b.fencing_token, "done")
    assert [r.lifecycle for r in store.runs.list(task_id="a")] == [RunStatus.FINISHED.value]
    assert store.audit.verify() is None


def test_the_fast_sqlite_replay_uses_the_contract_state_names() -> None:
    for state in (TaskState.RUNNING, TaskState.ESCALATED):
        assert f"'{state.value}'" in _REPLAY


def test_a_claimed_task_carries_its_idempotency_key(store: Store, clock: Clock) -> None:
    """What a PRD task stands for (``prd:<path>#ACn``) reaches the runner on every
    claim path: the claim (with and without labels), its replay, and one named task."""
    store.tasks.add_many(
        [
            NewTask("a", "x", id="a", idempotency_key="prd:docs/prd/x.md#AC1"),
            NewTask("b", "x", id="b", labels=["prd"], idempotency_key="prd:docs/prd/x.md#AC2"),
            NewTask("c", "x", id="c", idempotency_key="prd:docs/prd/x.md#AC3"),
            NewTask("d", "x", id="d"),
        ]
    )
    first = store.leases.claim("runner-1", 30, claim_key="k1")
    assert first is not None and first.idempotency_key == "prd:docs/prd/x.md#AC1"
    again = store.leases.claim("runner-1", 30, claim_key="k1")
    assert again is not None and again.idempotency_key == "prd:docs/prd/x.md#AC1"
    labelled = store.leases.claim("runner-1", 30, ["prd"])
    assert labelled is not None and labelled.idempotency_key == "prd:docs/prd/x.md#AC2"
    named = store.leases.claim_task("c", "runner-1", 30)
    assert named.idempotency_key == "prd:docs/prd/x.md#AC3"
    plain = store.leases.claim("runner-1", 30)
    assert plain is not None and plain.id == "d" and plain.idempotency_key is None
