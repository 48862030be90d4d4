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
    return store.register_runner(
        name, labels=labels, hostname="host-1", pid=4242, concurrency=concurrency
    )


def test_a_registered_runner_is_listed_online_with_what_it_holds(store: Store) -> None:
    runner_id = _register(store, labels=("linux", "gpu", "linux"))
    other = _register(store, "ci")
    assert runner_id.startswith("r-")
    assert runner_id != other
    store.add_task("a", "x", id="a")
    store.add_task("b", "x", id="b")
    assert store.claim(runner_id) is not None
    assert store.claim(runner_id) is not None
    first, second = store.list_runners()
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
    assert store.list_runners()[0].online
    store.runner_heartbeat(runner_id)
    clock.advance(59)
    runner = store.list_runners()[0]
    assert runner.online
    assert runner.last_seen_at < clock.now
    clock.advance(2)
    assert not store.list_runners()[0].online
    store.runner_heartbeat(runner_id)
    assert store.list_runners()[0].online


def test_a_stopped_runner_is_offline_at_once_and_audited(store: Store) -> None:
    runner_id = _register(store)
    store.runner_stopped(runner_id)
    store.runner_stopped(runner_id)  # twice is harmless
    runner = store.list_runners()[0]
    assert not runner.online
    assert runner.stopped_at is not None
    out = io.StringIO()
    store.export_audit(out)
    assert out.getvalue().count('"action":"runner.registered"') == 1
    assert out.getvalue().count('"action":"runner.stopped"') == 1
    assert store.verify_audit() is None


def test_unknown_runners_and_bad_concurrency_are_refused(store: Store) -> None:
    with pytest.raises(TaskError, match="no runner r-nope") as caught:
        store.runner_heartbeat("r-nope")
    assert caught.value.fix
    with pytest.raises(TaskError, match="no runner r-nope"):
        store.runner_stopped("r-nope")
    with pytest.raises(TaskError, match="concurrency of at least 1"):
        _register(store, concurrency=0)
    assert store.list_runners() == []
