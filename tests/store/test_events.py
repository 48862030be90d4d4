"""The live event stream as the store writes it: one event per change, in the change's
transaction, in order, filterable, and never for a change that was refused."""

from __future__ import annotations

import threading

from capataz.events import VERSION
from capataz.store import RunDetails, Store, TaskState

from .conftest import Clock


def _types(store: Store, after: int = 0, **filters: object) -> list[str]:
    return [e.type for e in store.events.after(after, **filters)]  # type: ignore[arg-type]


def test_a_task_lifecycle_is_told_step_by_step(store: Store) -> None:
    store.tasks.add("first", "x", id="a")
    store.tasks.add("second", "y", id="b", depends_on=["a"])
    runner = store.runners.register("r", hostname="h", pid=1, concurrency=1)
    claimed = store.leases.claim(runner)
    assert claimed is not None
    store.runs.step_started(claimed.run_id, "execute")
    store.runs.append_log(claimed.run_id, "hello\n")
    store.runs.step_finished(claimed.run_id, "execute", "ok")
    details = RunDetails(outcome="landed", diff="+hello\n")
    assert store.leases.complete(
        "a", claimed.fencing_token, "done", "landed", decision="land", details=details
    )
    store.runners.mark_stopped(runner)

    events = store.events.after(0)
    assert [(e.type, e.task_id) for e in events] == [
        ("task.created", "a"),
        ("task.created", "b"),
        ("runner.online", None),
        ("task.state", "a"),  # ready -> running
        ("run.started", "a"),
        ("run.step", "a"),
        ("run.log", "a"),
        ("run.step", "a"),
        ("task.state", "a"),  # running -> done
        ("run.finished", "a"),
        ("decision", "a"),
        ("task.state", "b"),  # pending -> ready: its dependency is done
        ("runner.offline", None),
    ]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    by_type = {e.type: e for e in events}
    assert events[0].data["title"] == "first"
    assert events[1].data["depends_on"] == ["a"] and events[1].data["status"] == "pending"
    assert by_type["run.started"].run_id == claimed.run_id
    assert by_type["run.started"].data == {"runner_id": runner, "attempt": 1}
    assert by_type["run.log"].data == {"text": "hello\n"}
    assert events[7].data == {"step": "execute", "status": "finished", "outcome": "ok"}
    assert events[8].data == {"status": "done", "was": "running", "reason": "landed"}
    assert by_type["run.finished"].data["result"] == "landed"
    assert events[10].data == {"decision": "land", "reason": "landed"}
    assert events[11].data["status"] == "ready"
    assert by_type["runner.offline"].data == {"runner_id": runner, "reason": "stopped"}
    assert store.runs.get(claimed.run_id).diff == "+hello\n"
    assert store.events.last_id() == ids[-1]
    as_json = events[0].as_json()
    assert as_json["version"] == VERSION and as_json["at"].endswith("Z")


def test_filters_by_task_run_and_type(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    store.tasks.add("b", "x", id="b")
    claimed = store.leases.claim("r1")
    assert claimed is not None
    store.runs.append_log(claimed.run_id, "one\n")
    assert _types(store, task_id="b") == ["task.created"]
    assert _types(store, run_id=claimed.run_id) == ["task.state", "run.started", "run.log"]
    assert _types(store, types=frozenset({"run.log", "run.started"})) == ["run.started", "run.log"]
    first = store.events.after(0)[0].id
    assert len(store.events.after(first)) == len(store.events.after(0)) - 1
    assert len(store.events.after(0, limit=2)) == 2


def test_refused_writes_and_rollbacks_leave_no_event(store: Store) -> None:
    store.tasks.add("a", "x", id="a")
    claimed = store.leases.claim("r1")
    assert claimed is not None
    store.tasks.cancel("a")
    before = store.events.last_id()
    assert not store.leases.complete("a", claimed.fencing_token, "done")  # stale token: refused
    assert not store.leases.release("a", claimed.fencing_token, "bye")
    assert store.events.last_id() == before
    cancelled = [e for e in store.events.after(0) if e.type in ("task.state", "run.finished")]
    assert [(e.type, e.data["status"]) for e in cancelled][-2:] == [
        ("task.state", "cancelled"),
        ("run.finished", "cancelled"),
    ]


def test_escalations_cascades_and_rescues_are_told(store: Store, clock: Clock) -> None:
    store.tasks.add("a", "x", id="a", max_attempts=1)
    store.tasks.add("b", "x", id="b", depends_on=["a"])
    claimed = store.leases.claim("r1", lease_seconds=30)
    assert claimed is not None
    details = {"violations": [{"type": "FORBIDDEN_PATH"}], "diff": "+x\n"}
    assert store.escalations.open("a", claimed.fencing_token, "needs a look", details)
    store.escalations.answer("a", "approve", decided_by="ana")
    escalation = store.runs.get(claimed.run_id).escalations[0]
    assert escalation["details"] == details
    clock.advance(60)
    assert store.sweep() == ["a"]
    kinds = [(e.type, e.task_id, e.data.get("status")) for e in store.events.after(0)]
    assert ("escalation.opened", "a", None) in kinds
    assert ("task.state", "a", "escalated") in kinds
    assert ("escalation.answered", "a", None) in kinds
    assert kinds[-3:] == [
        ("task.state", "a", "failed"),  # the lease expired with no attempts left
        ("run.finished", "a", "lost"),
        ("task.state", "b", "blocked"),  # its dependent never runs
    ]


def test_silent_runners_are_reported_offline_once_and_online_again(
    store: Store, clock: Clock
) -> None:
    runner = store.runners.register("r", hostname="h", pid=1, concurrency=1)
    assert store.tidy() == []
    clock.advance(61)
    assert store.tidy() == [runner]
    assert store.tidy() == []  # said once
    store.runners.heartbeat(runner)
    kinds = [(e.type, e.data.get("reason")) for e in store.events.after(0)]
    assert kinds == [
        ("runner.online", None),
        ("runner.offline", "no heartbeat for 60 s"),
        ("runner.online", "heard from again"),
    ]
    assert [r.online for r in store.runners.list()] == [True]


def test_concurrent_writers_give_increasing_ids_in_commit_order(store: Store) -> None:
    """A reader that resumes after the newest id it saw misses nothing, even while
    writers run concurrently."""
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        after = 0
        while not stop.is_set():
            for event in store.events.after(after):
                seen.append(event.id)
                after = event.id

    def write(prefix: str) -> None:
        for i in range(30):
            store.tasks.add(f"{prefix}{i}", "x")

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(p,)) for p in "xyz"]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    everything = [e.id for e in store.events.after(0, limit=1000)]
    tail = [e.id for e in store.events.after(seen[-1] if seen else 0, limit=1000)]
    assert seen + tail == everything
    assert len(everything) == 90
    assert {t.status for t in store.tasks.list()} == {TaskState.READY}


def test_writing_events_wakes_a_listener_on_postgresql(store: Store) -> None:
    """The server's event hub waits on ``wait_for_events``: on PostgreSQL a commit that
    wrote events wakes it (one NOTIFY per transaction); SQLite has nothing to wait on."""
    events = store.events
    if not events.waits_for_events:
        assert events.wait_for_events(0.0) is False
        return
    assert events.wait_for_events(0.0) is False  # opens the LISTEN connection
    store.tasks.add("woken", "x", id="w")
    assert events.wait_for_events(30.0) is True
    assert events.wait_for_events(0.0) is False  # one wake-up, drained
