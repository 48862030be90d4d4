"""Giving tasks back, is_current, the runbook's metrics (docs/runbook.md) and wake-ups,
on both databases."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import psycopg
import pytest
from tests.helpers import wait_for

from capataz.store import NewTask, RunStatus, Store, TaskState
from capataz.store._leases import SQLITE_POLL_SECONDS
from capataz.store._sqlite_claims import _CLAIM, _RUN

from .conftest import Clock


def test_release_gives_the_task_back_without_spending_an_attempt(store: Store) -> None:
    store.tasks.add("a", "x", id="a", max_attempts=1)
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert not store.leases.release("a", claimed.fencing_token + 1, "shutting down")
    assert store.leases.release("a", claimed.fencing_token, "runner stopping (SIGTERM)")
    task = store.tasks.get("a")
    assert (task.status, task.attempts, task.lease_owner) == (TaskState.READY, 0, None)
    assert task.reason == "runner stopping (SIGTERM)"
    assert not store.leases.is_current("a", claimed.fencing_token)
    assert not store.leases.complete("a", claimed.fencing_token, "done")
    assert store.leases.release("a", claimed.fencing_token, "twice")  # a retry: accepted, no write
    run = store.runs.get(claimed.run_id)
    assert (run.status, run.reason) == (RunStatus.RELEASED, "runner stopping (SIGTERM)")
    again = store.leases.claim("runner-2")
    assert again is not None
    assert (again.id, again.attempt, again.max_attempts) == ("a", 1, 1)
    out = io.StringIO()
    store.audit.export(out)
    assert out.getvalue().count('"action":"task.released"') == 1
    assert out.getvalue().count('"action":"task.release_refused"') == 1
    assert store.audit.verify() is None


def test_is_current_follows_the_lease(store: Store, clock: Clock) -> None:
    store.tasks.add("a", "x", id="a")
    assert not store.leases.is_current("a", 0)
    claimed = store.leases.claim("runner-1", lease_seconds=5)
    assert claimed is not None
    assert store.leases.is_current("a", claimed.fencing_token)
    assert not store.leases.is_current("a", claimed.fencing_token - 1)
    assert not store.leases.is_current("nope", claimed.fencing_token)
    clock.advance(6)
    store.sweep()
    assert not store.leases.is_current("a", claimed.fencing_token)


def test_metrics_have_the_runbooks_shape_and_counts(store: Store, clock: Clock) -> None:
    empty = store.metrics()
    assert empty == {
        "tasks": {state.value: 0 for state in TaskState},
        "runners": {"online": 0, "offline": 0},
        "runs": {"fail_rate_last_20": 0.0, "total": 0},
        "backlog": {"oldest_ready_age_seconds": None},
        "usage": {},
        "planner": {
            "calls": 0,
            "failed": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "cost_usd": None,
            "by_model": {},
        },
    }
    assert list(empty["tasks"]) == [state.value for state in TaskState]
    store.runners.register("gone", hostname="h", pid=1, concurrency=1)
    clock.advance(120)
    store.runners.register("here", hostname="h", pid=2, concurrency=1)
    store.tasks.add_many([NewTask(f"t{i}", "x", id=f"t{i}", max_attempts=1) for i in range(5)])
    store.tasks.add("later", "x", id="later", depends_on=["t4"])
    outcomes = ["done", "failed", "blocked", "done"]
    for outcome in outcomes:
        claimed = store.leases.claim("runner-1")
        assert claimed is not None
        assert store.leases.complete(claimed.id, claimed.fencing_token, outcome)
    clock.advance(30)
    running = store.leases.claim("runner-1")
    assert running is not None
    metrics = store.metrics()
    assert metrics["tasks"] == {
        "pending": 1,
        "ready": 0,
        "running": 1,
        "done": 2,
        "failed": 1,
        "blocked": 1,
        "escalated": 0,
        "cancelled": 0,
    }
    assert metrics["runners"] == {"online": 1, "offline": 1}
    assert metrics["runs"] == {"fail_rate_last_20": 0.5, "total": 5}
    assert metrics["backlog"] == {"oldest_ready_age_seconds": None}
    assert store.leases.release(running.id, running.fencing_token, "stopping")
    clock.advance(12)
    age = store.metrics()["backlog"]["oldest_ready_age_seconds"]
    assert 12 <= age < 13


def test_the_fast_sqlite_claim_uses_the_contract_state_names() -> None:
    for sql in (*_CLAIM.values(), _RUN):
        assert f"status = '{TaskState.RUNNING.value}'" in sql or f"'{RunStatus.RUNNING}'" in sql
    assert all(f"status = '{TaskState.READY.value}'" in sql for sql in _CLAIM.values())


def test_wait_for_ready_on_sqlite_polls_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/w.db")
    slept = _record_sleeps(monkeypatch)
    assert store.leases.wait_for_ready(10) is False
    assert slept == [SQLITE_POLL_SECONDS] and SQLITE_POLL_SECONDS <= 0.1  # not the 10 s
    store.close()


def _record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every time.sleep of this test, recorded (and still slept): how long the code
    under test chose to wait, which no load on the machine can change."""
    slept: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return slept


def test_wait_for_ready_wakes_on_postgresql_when_a_task_is_added(migrated_pg_url: str) -> None:
    waiter, adder = Store.open(migrated_pg_url), Store.open(migrated_pg_url)
    try:
        assert waiter.leases.wait_for_ready(0.05) is False  # connects and listens
        adding = threading.Timer(0.2, lambda: adder.tasks.add("a", "x"))
        adding.start()
        assert waiter.leases.wait_for_ready(120) is True  # woken: a timeout returns False
        adding.join()
        # Notifications are sent only when a task becomes ready.
        adder.tasks.add("b", "x", id="b")
        assert waiter.leases.wait_for_ready(120) is True
        adder.tasks.add("c", "x", id="c", depends_on=["b"])
        assert waiter.leases.wait_for_ready(0.2) is False
    finally:
        waiter.close()
        adder.close()


def test_wait_for_ready_reconnects_after_the_connection_dies(
    migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiter, adder = Store.open(migrated_pg_url), Store.open(migrated_pg_url)
    try:
        assert waiter.leases.wait_for_ready(0.05) is False
        with psycopg.connect(migrated_pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        slept = _record_sleeps(monkeypatch)
        # The error is absorbed: False, after a pause within the timeout, and no raise.
        wait_for(
            lambda: waiter.leases.wait_for_ready(2) is False and slept, "the dead LISTEN noticed"
        )
        assert max(slept) <= 2
        assert waiter.leases.wait_for_ready(0.05) is False  # listening again
        adder.tasks.add("a", "x")
        assert waiter.leases.wait_for_ready(120) is True
    finally:
        waiter.close()
        adder.close()


@pytest.mark.parametrize("when", ["retry", "dependents", "sweep", "requeue"])
def test_every_way_a_task_becomes_ready_wakes_runners(migrated_pg_url: str, when: str) -> None:
    store, waiter = Store.open(migrated_pg_url, retry_base_seconds=0.0), Store.open(migrated_pg_url)
    try:
        store.tasks.add_many(
            [NewTask("a", "x", id="a"), NewTask("b", "x", id="b", depends_on=["a"])]
        )
        claimed = store.leases.claim("runner-1", lease_seconds=0 if when == "sweep" else 30)
        assert claimed is not None
        assert waiter.leases.wait_for_ready(0.05) is False
        if when == "retry":
            store.leases.complete("a", claimed.fencing_token, "failed")
        elif when == "dependents":
            store.leases.complete("a", claimed.fencing_token, "done")
        elif when == "sweep":
            time.sleep(0.01)
            assert store.sweep() == ["a"]
        else:
            store.tasks.cancel("a")
            assert waiter.leases.wait_for_ready(0.2) is False, "a cancel makes nothing ready"
            store.tasks.requeue("a")
        assert waiter.leases.wait_for_ready(120) is True
    finally:
        store.close()
        waiter.close()


def test_an_in_memory_sqlite_store_claims_from_its_one_database() -> None:
    store = Store.open("sqlite://")
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert store.tasks.get("a").status is TaskState.RUNNING
    assert store.leases.complete("a", claimed.fencing_token, "done")
    assert store.audit.verify() is None
    store.close()
