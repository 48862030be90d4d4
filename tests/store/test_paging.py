"""Paged lists computed in SQL (``store.tasks.page``, ``store.runs.count``) agree with the full
lists they page through, on both databases: same order, same tasks with the same
dependencies, the right total, and a fixed number of queries however big the page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.store import NewTask, RunStatus, Store, TaskState


def _fill(store: Store) -> list[str]:
    """Nine tasks, some waiting on others, several sharing a creation time (a batch
    takes now, now+1µs, ... and the test clock's next reading is now+1µs too), so the
    id must break ties for the order to be stable."""
    first = store.tasks.add_many(
        [
            NewTask("b", "b", id="b"),
            NewTask("a", "a", id="a"),
            NewTask("c", "c", id="c", depends_on=["a", "b"]),
        ]
    )
    rest = [store.tasks.add(f"t{n}", "x", id=f"t{n}") for n in range(4)]
    rest += store.tasks.add_many(
        [NewTask("d", "d", id="d", depends_on=["c"]), NewTask("e", "e", id="e")]
    )
    return [t.id for t in first + rest]


@contextmanager
def _selects(store: Store) -> Iterator[list[str]]:
    """The SELECT statements the store sends while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def test_pages_are_slices_of_the_full_list(store: Store) -> None:
    _fill(store)
    everything = store.tasks.list()
    assert len(everything) == 9
    for limit in (1, 2, 4, 9, 20):
        for offset in range(11):
            page, total = store.tasks.page(limit=limit, offset=offset)
            assert total == 9
            assert page == everything[offset : offset + limit]


def test_walking_the_pages_visits_every_task_once_in_order(store: Store) -> None:
    _fill(store)
    seen: list[str] = []
    offset = 0
    while True:
        page, total = store.tasks.page(limit=2, offset=offset)
        if not page:
            break
        seen += [t.id for t in page]
        offset += len(page)
    assert total == 9
    assert seen == [t.id for t in store.tasks.list()]
    created = [(t.created_at, t.id) for t in store.tasks.list()]
    assert created == sorted(created)
    assert len({at for at, _ in created}) < len(created)  # ties exist and id breaks them


def test_a_status_filter_pages_and_counts_only_that_state(store: Store) -> None:
    _fill(store)
    pending = store.tasks.list(TaskState.PENDING)
    assert [t.id for t in pending] == ["c", "d"]
    assert store.tasks.page("pending", limit=1, offset=1) == (pending[1:], 2)
    assert store.tasks.page(TaskState.PENDING, limit=10) == (pending, 2)
    ready, total = store.tasks.page(TaskState.READY, limit=3, offset=2)
    assert total == 7
    assert ready == store.tasks.list(TaskState.READY)[2:5]
    assert store.tasks.page(TaskState.DONE) == ([], 0)


def test_a_page_carries_its_tasks_dependencies(store: Store) -> None:
    _fill(store)
    page, _ = store.tasks.page(limit=9)
    by_id = {t.id: t for t in page}
    assert by_id["c"].depends_on == ("a", "b")
    assert by_id["d"].depends_on == ("c",)
    assert by_id["a"].depends_on == ()
    assert all(t == store.tasks.get(t.id) for t in page)


def test_a_page_costs_three_selects_however_long_it_is(store: Store) -> None:
    _fill(store)
    for limit in (1, 9):
        with _selects(store) as seen:
            store.tasks.page(limit=limit)
        touching = [s for s in seen if "tasks" in s or "task_dependencies" in s]
        assert len(touching) == 3, touching  # the count, the page, the page's edges
    with _selects(store) as seen:
        assert store.tasks.page(limit=5, offset=100) == ([], 9)
    assert len([s for s in seen if "task_dependencies" in s]) == 0


def test_a_negative_limit_or_offset_is_refused(store: Store) -> None:
    with pytest.raises(TaskError, match="cannot be negative"):
        store.tasks.page(limit=-1)
    with pytest.raises(TaskError, match="cannot be negative"):
        store.tasks.page(offset=-1)
    assert store.tasks.page(limit=0) == ([], 0)


def test_count_runs_counts_what_list_runs_pages_through(store: Store) -> None:
    for task_id in ("a", "b", "c"):
        store.tasks.add(task_id, "x", id=task_id)
    claims = [store.leases.claim("runner-1") for _ in range(3)]
    assert all(claims)
    first = claims[0]
    assert first is not None
    assert store.leases.complete(first.id, first.fencing_token, TaskState.DONE)
    assert store.runs.count() == 3 == len(store.runs.list(limit=100))
    assert store.runs.count(task_id=first.id) == 1
    assert store.runs.count(task_id="nope") == 0
    assert store.runs.count(status=RunStatus.FINISHED.value) == 1
    assert store.runs.count(status="running") == 2
    assert store.runs.count(task_id=first.id, status="running") == 0
    assert [r.id for r in store.runs.list(limit=1, offset=2)] == [
        r.id for r in store.runs.list(limit=100)
    ][2:]
    with pytest.raises(TaskError, match="no run status 'sleeping'"):
        store.runs.count(status="sleeping")
