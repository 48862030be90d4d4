"""``store.directives`` on both databases: adding, listing, applying (the tasks and the
APPLIED status in one transaction) and rejecting, with their audit entries and events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.store import (
    DirectiveStatus,
    NewTask,
    NoSuchDirectiveError,
    ProposedTask,
    Store,
    TaskState,
    UnknownDependencyError,
)
from capataz.store.errors import ArgumentRefusedError
from capataz.store.schema import audit, directives, tasks

PROPOSED = (
    ProposedTask("build", "Build", "make build"),
    ProposedTask("test", "Test", "make test", depends_on=("build",)),
)


def _specs(prefix: str = "t-dir") -> list[NewTask]:
    return [
        NewTask(title="Build", instruction="make build", id=f"{prefix}-build"),
        NewTask(
            title="Test",
            instruction="make test",
            id=f"{prefix}-test",
            depends_on=[f"{prefix}-build"],
        ),
    ]


def _add(store: Store) -> str:
    directive, created = store.directives.add(
        "Build then test", "the suite must pass", PROPOSED, model="m", usage={"total_tokens": 3}
    )
    assert created == []
    return directive.id


def test_add_get_list_and_page(store: Store) -> None:
    first = _add(store)
    second = _add(store)
    got = store.directives.get(first)
    assert got.status is DirectiveStatus.PENDING
    assert got.tasks == PROPOSED
    assert got.usage == {"total_tokens": 3}
    assert got.created_task_ids == ()
    assert [d.id for d in store.directives.list()] == [second, first]  # newest first
    page, total = store.directives.page(DirectiveStatus.PENDING, limit=1)
    assert total == 2
    assert [d.id for d in page] == [second]
    assert store.directives.list("APPLIED") == []
    with pytest.raises(NoSuchDirectiveError, match="no directive d-missing"):
        store.directives.get("d-missing")


def test_apply_creates_the_tasks_in_order_and_marks_it_applied(store: Store) -> None:
    directive_id = _add(store)
    applied, created = store.directives.apply(directive_id, _specs(), actor="alice")
    assert applied.status is DirectiveStatus.APPLIED
    assert applied.decided_by == "alice"
    assert applied.decided_at is not None
    assert applied.created_task_ids == ("t-dir-build", "t-dir-test")
    assert [t.id for t in created] == ["t-dir-build", "t-dir-test"]
    assert [t.status for t in created] == [TaskState.READY, TaskState.PENDING]
    assert store.tasks.get("t-dir-test").depends_on == ("t-dir-build",)
    store.audit.seal()  # PostgreSQL's entries reach the chain when sealed
    with store.engine.connect() as conn:
        actions = conn.execute(sa.select(audit.c.action).where(audit.c.subject == directive_id))
        assert set(actions.scalars()) == {"directive.created", "directive.applied"}
    kinds = [event.type for event in store.events.after(0)]
    assert EventType.DIRECTIVE_CREATED in kinds
    assert EventType.DIRECTIVE_DECIDED in kinds
    assert store.audit.verify() is None


def test_applying_twice_or_rejecting_an_applied_one_is_refused(store: Store) -> None:
    directive_id = _add(store)
    store.directives.apply(directive_id, _specs(), actor="alice")
    with pytest.raises(TaskError, match="already APPLIED; cannot apply") as caught:
        store.directives.apply(directive_id, _specs("t-other"), actor="bob")
    assert type(caught.value) is TaskError  # a 409 kind, not 404 or 422
    with pytest.raises(TaskError, match="already APPLIED; cannot reject"):
        store.directives.reject(directive_id, "too late", actor="bob")
    assert len(store.tasks.list()) == 2


def test_reject_keeps_the_reason_and_queues_nothing(store: Store) -> None:
    directive_id = _add(store)
    rejected = store.directives.reject(directive_id, "not now", actor="bob")
    assert rejected.status is DirectiveStatus.REJECTED
    assert (rejected.reason, rejected.decided_by) == ("not now", "bob")
    with pytest.raises(TaskError, match="already REJECTED; cannot apply"):
        store.directives.apply(directive_id, _specs(), actor="alice")
    assert store.tasks.list() == []


def test_a_refused_task_leaves_the_directive_pending_and_nothing_queued(store: Store) -> None:
    """Atomicity: the second task's unknown dependency is found after the first was
    inserted in the same transaction; the rollback takes both, and the directive's
    status with them."""
    directive_id = _add(store)
    specs = [
        NewTask(title="Build", instruction="make build", id="t-a"),
        NewTask(title="Test", instruction="make test", id="t-b", depends_on=["t-nowhere"]),
    ]
    with pytest.raises(UnknownDependencyError):
        store.directives.apply(directive_id, specs, actor="alice")
    assert store.directives.get(directive_id).status is DirectiveStatus.PENDING
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one() == 0
        row = conn.execute(sa.select(directives.c.created_task_ids)).one()
    assert row.created_task_ids == []
    # and it can still be applied once the tasks are right
    applied, _ = store.directives.apply(directive_id, _specs(), actor="alice")
    assert applied.status is DirectiveStatus.APPLIED


def test_add_with_apply_is_one_transaction(store: Store) -> None:
    directive, created = store.directives.add(
        "auto", "r", PROPOSED, model="m", apply=_specs(), actor="planner"
    )
    assert directive.status is DirectiveStatus.APPLIED
    assert [t.id for t in created] == ["t-dir-build", "t-dir-test"]
    with pytest.raises(UnknownDependencyError):
        store.directives.add(
            "auto",
            "r",
            PROPOSED,
            model="m",
            apply=[NewTask(title="x", instruction="y", id="t-x", depends_on=["t-none"])],
        )
    assert len(store.directives.list()) == 1  # the refused one was not stored either


def test_a_rejected_directive_needs_a_reason_and_its_raw_answer_is_masked(store: Store) -> None:
    from capataz import redaction

    redaction.add({"PLANNER_KEY": "sk-very-secret-value"})
    with pytest.raises(ArgumentRefusedError):
        store.directives.add("bad", "", (), model="m", status=DirectiveStatus.REJECTED)
    directive, _ = store.directives.add(
        "bad",
        "",
        (),
        model="m",
        status=DirectiveStatus.REJECTED,
        reason="dependency cycle: a -> b -> a",
        raw_answer='{"key": "sk-very-secret-value"}',
    )
    assert directive.raw_answer is not None
    assert "sk-very-secret-value" not in directive.raw_answer
    assert directive.decided_at is not None


def test_two_operators_applying_at_once_queue_the_tasks_once(store: Store) -> None:
    """The row lock (PostgreSQL) or the write lock (SQLite) makes the second apply see
    APPLIED and be refused, instead of queueing the directive's tasks twice."""
    import threading

    directive_id = _add(store)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def apply(prefix: str) -> None:
        barrier.wait()
        try:
            store.directives.apply(directive_id, _specs(prefix), actor=prefix)
            outcomes.append("applied")
        except TaskError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=apply, args=(p,)) for p in ("t-one", "t-two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["TaskError", "applied"]
    assert len(store.tasks.list()) == 2
