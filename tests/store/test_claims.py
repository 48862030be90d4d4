"""Claiming, leases, fencing tokens, retries and the sweeper on both databases."""

from __future__ import annotations

import io
import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.store import NewTask, RunStatus, Store, TaskState
from capataz.store.schema import runs

from .conftest import Clock


def test_claim_takes_priority_then_age(store: Store, clock: Clock) -> None:
    store.tasks.add_many(
        [
            NewTask("old-low", "x", id="old-low"),
            NewTask("old-high", "x", id="old-high", priority=9),
        ]
    )
    store.tasks.add_many([NewTask("new-high", "x", id="new-high", priority=9)])
    store.tasks.add("later", "x", id="later", priority=99, run_after=clock.now + timedelta(hours=1))
    order = []
    while (claimed := store.leases.claim("runner-1")) is not None:
        order.append(claimed.id)
    assert order == ["old-high", "new-high", "old-low"]
    clock.advance(3601)
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert claimed.id == "later"


def test_claim_grants_a_lease_and_records_a_run(store: Store, clock: Clock) -> None:
    task = store.tasks.add("a", "do a", "claude", base_commit="abc123", allow_high=True)
    claimed = store.leases.claim("runner-1", lease_seconds=30)
    assert claimed is not None
    assert (claimed.id, claimed.instruction, claimed.agent) == (task.id, "do a", "claude")
    assert (claimed.attempt, claimed.fencing_token, claimed.base_commit) == (1, 1, "abc123")
    assert claimed.allow_high
    stored = store.tasks.get(task.id)
    assert stored.status is TaskState.RUNNING
    assert stored.lease_owner == "runner-1"
    assert stored.lease_expires_at == claimed.lease_expires_at
    assert store.leases.claim("runner-2") is None
    with store.engine.connect() as conn:
        run = conn.execute(sa.select(runs)).one()
    assert (run.id, run.runner_id, run.status) == (claimed.run_id, "runner-1", "running")


def test_labels_select_tasks(store: Store) -> None:
    store.tasks.add_many(
        [NewTask("gpu", "x", id="gpu", labels=["gpu", "linux"]), NewTask("any", "x", id="any")]
    )
    plain = store.leases.claim("cpu-runner", labels=["linux"])
    assert plain is not None
    assert plain.id == "any"
    assert store.leases.claim("cpu-runner", labels=["linux"]) is None
    gpu = store.leases.claim("gpu-runner", labels=["linux", "gpu", "big"])
    assert gpu is not None
    assert gpu.id == "gpu"


def test_concurrent_claimers_take_each_task_exactly_once(db_url: str) -> None:
    setup = Store.open(db_url)
    setup.tasks.add_many([NewTask(f"t{i}", "x", id=f"t{i:03}") for i in range(300)])
    stores = [Store(setup.engine) for _ in range(4)]
    taken: list[list[str]] = [[] for _ in stores]
    refused: list[str] = []

    def work(index: int) -> None:
        store = stores[index]
        while (claimed := store.leases.claim(f"runner-{index}")) is not None:
            taken[index].append(claimed.id)
            if not store.leases.complete(claimed.id, claimed.fencing_token, "done"):
                refused.append(claimed.id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(task_id for ids in taken for task_id in ids)
    assert len(counts) == 300
    assert set(counts.values()) == {1}
    assert refused == []
    assert {t.status for t in setup.tasks.list()} == {TaskState.DONE}
    assert setup.audit.verify() is None
    setup.close()


def test_stale_fencing_token_is_refused_and_audited(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert not store.leases.complete("a", claimed.fencing_token + 1, "done")
    assert not store.leases.heartbeat("a", claimed.fencing_token - 1)
    assert store.tasks.get("a").status is TaskState.RUNNING
    assert store.leases.complete("a", claimed.fencing_token, "done")
    # A report repeated after its answer was lost is accepted (nothing written again);
    # a different ending for the same lease is refused.
    assert store.leases.complete("a", claimed.fencing_token, "done"), (
        "a repeated report is accepted"
    )
    assert not store.leases.complete("a", claimed.fencing_token, "failed"), "a different one is not"
    out = io.StringIO()
    store.audit.export(out)
    assert out.getvalue().count('"action":"task.complete_refused"') == 2
    with pytest.raises(TaskError, match="cannot end a task as running"):
        store.leases.complete("a", claimed.fencing_token, "running")


def test_heartbeat_extends_the_lease_so_the_sweeper_leaves_it(store: Store, clock: Clock) -> None:
    store.tasks.add("long", "x", id="long")
    claimed = store.leases.claim("runner-1", lease_seconds=30)
    assert claimed is not None
    for _ in range(5):
        clock.advance(20)
        assert store.leases.heartbeat("long", claimed.fencing_token, lease_seconds=30)
        assert store.sweep() == []
    assert store.leases.complete("long", claimed.fencing_token, "done")


def test_sweep_rescues_an_expired_lease_and_refuses_the_dead_runners_write(
    store: Store, clock: Clock
) -> None:
    store.tasks.add("a", "x", id="a", max_attempts=2)
    dead = store.leases.claim("runner-dead", lease_seconds=30)
    assert dead is not None
    clock.advance(10)
    assert store.sweep() == []
    clock.advance(30)
    assert store.sweep() == ["a"]
    task = store.tasks.get("a")
    assert task.status is TaskState.READY
    assert task.reason is not None
    assert "lease of runner-dead expired" in task.reason
    assert "attempt 1 of 2" in task.reason
    alive = store.leases.claim("runner-alive")
    assert alive is not None
    assert alive.attempt == 2
    assert alive.fencing_token > dead.fencing_token
    assert not store.leases.complete("a", dead.fencing_token, "done")
    assert not store.leases.heartbeat("a", dead.fencing_token)
    assert store.leases.complete("a", alive.fencing_token, "done")
    with store.engine.connect() as conn:
        statuses = conn.execute(
            sa.select(runs.c.runner_id, runs.c.status).order_by(runs.c.attempt)
        ).all()
    assert [tuple(row) for row in statuses] == [
        ("runner-dead", RunStatus.LOST),
        ("runner-alive", RunStatus.FINISHED),
    ]


def test_sweep_fails_a_task_whose_attempts_are_exhausted(store: Store, clock: Clock) -> None:
    store.tasks.add_many(
        [NewTask("a", "x", id="a", max_attempts=1), NewTask("b", "x", id="b", depends_on=["a"])]
    )
    assert store.leases.claim("runner-1", lease_seconds=5) is not None
    clock.advance(6)
    assert store.sweep() == ["a"]
    assert store.tasks.get("a").status is TaskState.FAILED
    assert store.tasks.get("b").status is TaskState.BLOCKED


def test_failed_attempt_retries_after_a_growing_backoff(store: Store, clock: Clock) -> None:
    store.leases.retry_base_seconds = 10
    store.tasks.add("flaky", "x", id="flaky", max_attempts=3)
    delays = []
    for _attempt in range(2):
        claimed = store.leases.claim("runner-1")
        assert claimed is not None
        assert store.leases.complete("flaky", claimed.fencing_token, "failed", "exit 1")
        task = store.tasks.get("flaky")
        assert task.status is TaskState.READY
        delays.append((task.run_after - clock.now).total_seconds())
        assert store.leases.claim("runner-1") is None, "not before the backoff"
        clock.advance(delays[-1] + 1)
    assert 5 <= delays[0] <= 10
    assert 10 <= delays[1] <= 20
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert claimed.attempt == 3
    assert store.leases.complete("flaky", claimed.fencing_token, "failed", "exit 1")
    assert store.tasks.get("flaky").status is TaskState.FAILED


def test_cancel_of_a_running_task_revokes_the_lease(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    store.tasks.cancel("a", "operator said stop")
    assert not store.leases.heartbeat("a", claimed.fencing_token)
    assert not store.leases.complete("a", claimed.fencing_token, "done")
    assert store.tasks.get("a").status is TaskState.CANCELLED
