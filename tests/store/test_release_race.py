"""Two dependencies of one task finishing at the same moment on PostgreSQL: the task
must become ready, whichever of the two commits first.

Each completion checks "are all of its dependencies done?" for the waiting task. Under
READ COMMITTED, two completions that both check before either commits would each see
the other's dependency still running, and the task would wait forever. The test makes
that interleaving certain: a session holding the event stream's ordering lock stops
both completions just before their commit (the events are written last), after the
check has run."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from tests.helpers import wait_for

from capataz.store import NewTask, Store, TaskState
from capataz.store._audit_sql import EVENT_ORDER_KEY


@pytest.fixture
def pg_store(migrated_pg_url: str) -> Iterator[Store]:
    store = Store.open(migrated_pg_url)
    yield store
    store.close()


def _waiting(url: str) -> int:
    """How many sessions wait for a lock (any kind)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return int(row[0]) if row else 0


def test_a_task_whose_two_dependencies_finish_together_becomes_ready(
    pg_store: Store, migrated_pg_url: str
) -> None:
    pg_store.tasks.add_many(
        [
            NewTask("a", "x", id="a"),
            NewTask("b", "x", id="b"),
            NewTask("c", "x", id="c", depends_on=["a", "b"]),
        ]
    )
    first = pg_store.leases.claim("r1", 600)
    second = pg_store.leases.claim("r2", 600)
    assert first is not None and second is not None
    plain = migrated_pg_url.replace("postgresql+psycopg://", "postgresql://")
    holder = psycopg.connect(plain)
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_ORDER_KEY,))
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda task=task: results.append(
                pg_store.leases.complete(task.id, task.fencing_token, "done")
            )
        )
        for task in (first, second)
    ]
    threads[0].start()
    wait_for(lambda: _waiting(migrated_pg_url) == 1, "the first completion to wait")
    threads[1].start()
    # The second completion waits too: on the ordering lock (it checked already) or on
    # the first one's lock of the waiting task (it will check after the first commits).
    wait_for(lambda: _waiting(migrated_pg_url) == 2, "the second completion to wait")
    holder.rollback()
    holder.close()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [True, True]
    assert pg_store.tasks.get("c").status is TaskState.READY
    assert pg_store.audit.verify() is None
