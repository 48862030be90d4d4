"""Adding, listing, dependencies, idempotency, cancel and requeue on both databases."""

from __future__ import annotations

import pytest

from capataz.errors import TaskError
from capataz.store import (
    DependencyCycleError,
    NewTask,
    Store,
    TaskState,
    UnknownDependencyError,
)


def test_add_get_and_list(store: Store) -> None:
    first = store.tasks.add("one", "echo 1", priority=5, labels=["gpu", "gpu"], max_attempts=2)
    second = store.tasks.add("two", "echo 2", depends_on=[first.id])
    assert first.status is TaskState.READY
    assert first.labels == ("gpu",)
    assert second.status is TaskState.PENDING
    assert second.depends_on == (first.id,)
    assert store.tasks.get(first.id) == first
    assert [t.id for t in store.tasks.list()] == [first.id, second.id]
    assert [t.id for t in store.tasks.list(status="pending")] == [second.id]
    assert store.tasks.list(TaskState.DONE) == []
    with pytest.raises(TaskError, match="no task t-missing"):
        store.tasks.get("t-missing")


def test_idempotency_key_returns_the_existing_task(store: Store) -> None:
    original = store.tasks.add("nightly", "make", idempotency_key="nightly-2024-06-01")
    again = store.tasks.add("nightly (again)", "make", idempotency_key="nightly-2024-06-01")
    assert again == original
    assert len(store.tasks.list()) == 1


def test_tasks_by_idempotency_key_prefix_take_wildcards_literally(store: Store) -> None:
    first = store.tasks.add("one", "a", idempotency_key="prd:docs/a_b.md#AC1")
    second = store.tasks.add("two", "b", idempotency_key="prd:docs/a_b.md#AC2")
    store.tasks.add("other", "c", idempotency_key="prd:docs/aXb.md#AC1")
    store.tasks.add("percent", "d", idempotency_key="prd:docs/a%b.md#AC1")
    store.tasks.add("unkeyed", "e")
    assert [t.id for t in store.tasks.with_key_prefix("prd:docs/a_b.md#")] == [
        first.id,
        second.id,
    ]
    assert [t.title for t in store.tasks.with_key_prefix("prd:docs/a%")] == ["percent"]
    assert store.tasks.with_key_prefix("nothing:") == []


def test_batch_resolves_dependencies_inside_it(store: Store) -> None:
    created = store.tasks.add_many(
        [
            NewTask("c", "c", id="c", depends_on=["a", "b"]),
            NewTask("a", "a", id="a"),
            NewTask("b", "b", id="b", depends_on=["a"]),
        ]
    )
    assert [(t.id, t.status) for t in created] == [
        ("c", TaskState.PENDING),
        ("a", TaskState.READY),
        ("b", TaskState.PENDING),
    ]
    assert created[0].depends_on == ("a", "b")


def test_unknown_dependency_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(UnknownDependencyError, match="depends on unknown task t-nope"):
        store.tasks.add_many([NewTask("a", "a", id="a"), NewTask("b", "b", depends_on=["t-nope"])])
    assert store.tasks.list() == []


def test_cycle_is_refused_with_the_cycle_named(store: Store) -> None:
    existing = store.tasks.add("base", "base", id="base")
    specs = [
        NewTask("x", "x", id="x", depends_on=["z", existing.id]),
        NewTask("y", "y", id="y", depends_on=["x"]),
        NewTask("z", "z", id="z", depends_on=["y"]),
    ]
    with pytest.raises(DependencyCycleError, match=r"x -> z -> y -> x"):
        store.tasks.add_many(specs)
    with pytest.raises(DependencyCycleError, match=r"self -> self"):
        store.tasks.add_many([NewTask("s", "s", id="self", depends_on=["self"])])
    assert [t.id for t in store.tasks.list()] == ["base"]


def test_duplicate_ids_are_refused(store: Store) -> None:
    store.tasks.add("a", "a", id="a")
    with pytest.raises(TaskError, match="task a already exists"):
        store.tasks.add("a", "a", id="a")
    with pytest.raises(TaskError, match="appears twice"):
        store.tasks.add_many([NewTask("b", "b", id="b"), NewTask("b", "b", id="b")])


def _finish(store: Store, state: TaskState) -> str:
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    assert store.leases.complete(claimed.id, claimed.fencing_token, state, f"it {state}")
    return claimed.id


def test_diamond_becomes_ready_only_when_every_dependency_is_done(store: Store) -> None:
    store.tasks.add_many(
        [
            NewTask("top", "t", id="top"),
            NewTask("left", "l", id="left", depends_on=["top"]),
            NewTask("right", "r", id="right", depends_on=["top"]),
            NewTask("bottom", "b", id="bottom", depends_on=["left", "right"]),
        ]
    )
    assert _finish(store, TaskState.DONE) == "top"
    assert store.tasks.get("left").status is TaskState.READY
    assert store.tasks.get("right").status is TaskState.READY
    _finish(store, TaskState.DONE)
    assert store.tasks.get("bottom").status is TaskState.PENDING
    _finish(store, TaskState.DONE)
    assert store.tasks.get("bottom").status is TaskState.READY


@pytest.mark.parametrize(
    ("ending", "dependents_become"),
    [(TaskState.BLOCKED, TaskState.BLOCKED), (TaskState.CANCELLED, TaskState.CANCELLED)],
)
def test_a_bad_ending_stops_dependents_transitively(
    store: Store, ending: TaskState, dependents_become: TaskState
) -> None:
    store.tasks.add_many(
        [
            NewTask("a", "a", id="a"),
            NewTask("b", "b", id="b", depends_on=["a"]),
            NewTask("c", "c", id="c", depends_on=["b"]),
        ]
    )
    _finish(store, ending)
    b, c = store.tasks.get("b"), store.tasks.get("c")
    assert (b.status, b.reason) == (dependents_become, f"dependency a ended {ending}")
    assert (c.status, c.reason) == (dependents_become, f"dependency b ended {dependents_become}")
    late = store.tasks.add("late", "l", depends_on=["a"])
    assert late.status is dependents_become
    assert store.leases.claim("runner-1") is None


def test_failed_after_the_last_attempt_blocks_dependents(store: Store) -> None:
    store.tasks.add_many(
        [NewTask("a", "a", id="a", max_attempts=1), NewTask("b", "b", id="b", depends_on=["a"])]
    )
    _finish(store, TaskState.FAILED)
    assert store.tasks.get("a").status is TaskState.FAILED
    assert store.tasks.get("b").reason == "dependency a ended failed"


def test_cancel_and_requeue(store: Store) -> None:
    store.tasks.add_many([NewTask("a", "a", id="a"), NewTask("b", "b", id="b", depends_on=["a"])])
    cancelled = store.tasks.cancel("a", "not needed")
    assert (cancelled.status, cancelled.reason) == (TaskState.CANCELLED, "not needed")
    assert store.tasks.get("b").status is TaskState.CANCELLED
    with pytest.raises(TaskError, match="already ended cancelled"):
        store.tasks.cancel("a")
    requeued_b = store.tasks.requeue("b")
    assert requeued_b.status is TaskState.PENDING  # a is not done
    requeued_a = store.tasks.requeue("a", backoff_seconds=60)
    assert requeued_a.status is TaskState.READY
    assert requeued_a.attempts == 0
    assert store.leases.claim("runner-1") is None  # backoff not over
    with pytest.raises(TaskError, match="nothing to requeue"):
        store.tasks.requeue("a")
