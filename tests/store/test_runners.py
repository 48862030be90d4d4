"""Runner registrations, liveness and what each runner holds, on both databases."""

from __future__ import annotations

import io

import pytest

from capataz.errors import TaskError
from capataz.store import Store

from .conftest import Clock


def _register(
    store: Store, name: str = "laptop", *, labels: tuple[str, ...] = (), concurrency: int = 2
) -> str:
    return store.runners.register(
        name, labels=labels, hostname="host-1", pid=4242, concurrency=concurrency
    )


def test_a_registered_runner_is_listed_online_with_what_it_holds(store: Store) -> None:
    runner_id = _register(store, labels=("linux", "gpu", "linux"))
    other = _register(store, "ci")
    assert runner_id.startswith("r-")
    assert runner_id != other
    store.tasks.add("a", "x", id="a")
    store.tasks.add("b", "x", id="b")
    assert store.leases.claim(runner_id) is not None
    assert store.leases.claim(runner_id) is not None
    first, second = store.runners.list()
    assert (first.id, first.name, first.hostname, first.pid) == (
        runner_id,
        "laptop",
        "host-1",
        4242,
    )
    assert (first.labels, first.concurrency) == (("gpu", "linux"), 2)
    assert first.online
    assert first.stopped_at is None
    assert first.current_tasks == ("a", "b")
    assert (second.id, second.current_tasks) == (other, ())


def test_a_runner_goes_offline_after_60_seconds_without_a_heartbeat(
    store: Store, clock: Clock
) -> None:
    runner_id = _register(store)
    clock.advance(59)
    assert store.runners.list()[0].online
    store.runners.heartbeat(runner_id)
    clock.advance(59)
    runner = store.runners.list()[0]
    assert runner.online
    assert runner.last_seen_at < clock.now
    clock.advance(2)
    assert not store.runners.list()[0].online
    store.runners.heartbeat(runner_id)
    assert store.runners.list()[0].online


def test_a_stopped_runner_is_offline_at_once_and_audited(store: Store) -> None:
    runner_id = _register(store)
    store.runners.mark_stopped(runner_id)
    store.runners.mark_stopped(runner_id)  # twice is harmless
    runner = store.runners.list()[0]
    assert not runner.online
    assert runner.stopped_at is not None
    out = io.StringIO()
    store.audit.export(out)
    assert out.getvalue().count('"action":"runner.registered"') == 1
    assert out.getvalue().count('"action":"runner.stopped"') == 1
    assert store.audit.verify() is None


def test_unknown_runners_and_bad_concurrency_are_refused(store: Store) -> None:
    with pytest.raises(TaskError, match="no runner r-nope") as caught:
        store.runners.heartbeat("r-nope")
    assert caught.value.fix
    with pytest.raises(TaskError, match="no runner r-nope"):
        store.runners.mark_stopped("r-nope")
    with pytest.raises(TaskError, match="concurrency of at least 1"):
        _register(store, concurrency=0)
    assert store.runners.list() == []
