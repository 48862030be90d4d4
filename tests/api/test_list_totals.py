"""The paged lists over HTTP: ``GET /ops/tasks`` and ``GET /runs`` answer one page and
say in X-Total-Count how many there are in all (both counted in SQL by the store), on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.encoders import jsonable_encoder
from tests.api.conftest import Server

from capataz.store import Task, TaskState, task_json


def test_task_pages_carry_the_total(server: Server) -> None:
    store = server.store()
    try:
        ids = [store.tasks.add(f"t{n}", "true", id=f"t{n}").id for n in range(5)]
        store.tasks.add("waits", "true", id="waits", depends_on=["t0"])
    finally:
        store.close()
    with server.client("viewer") as client:
        page = client.get("/ops/tasks", params={"limit": 2, "offset": 1})
        ready = client.get("/ops/tasks", params={"status": "ready", "limit": 2, "offset": 4})
        pending = client.get("/ops/tasks", params={"status": "pending"})
        beyond = client.get("/ops/tasks", params={"offset": 100})
        everything = client.get("/ops/tasks")
    assert page.status_code == 200, page.text
    assert page.headers["X-Total-Count"] == "6"
    assert [t["id"] for t in page.json()["data"]] == ids[1:3]
    assert ready.headers["X-Total-Count"] == "5"
    assert [t["id"] for t in ready.json()["data"]] == ids[4:]
    assert pending.headers["X-Total-Count"] == "1"
    assert pending.json()["data"][0]["depends_on"] == ["t0"]
    assert pending.json()["data"][0]["status"] == TaskState.PENDING.value
    assert beyond.headers["X-Total-Count"] == "6"
    assert beyond.json()["data"] == []
    assert [t["id"] for t in everything.json()["data"]] == [*ids, "waits"]


def test_run_pages_carry_the_total(server: Server) -> None:
    store = server.store()
    try:
        for n in range(3):
            store.tasks.add(f"t{n}", "true", id=f"t{n}")
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=3)
        claims = [store.leases.claim(runner) for _ in range(3)]
        first = claims[0]
        assert first is not None
        assert store.leases.complete(first.id, first.fencing_token, TaskState.DONE)
    finally:
        store.close()
    with server.client("viewer") as client:
        every = client.get("/runs")
        page = client.get("/runs", params={"limit": 1, "offset": 1})
        finished = client.get("/runs", params={"status": "finished"})
        of_task = client.get("/runs", params={"task_id": first.id})
        none = client.get("/runs", params={"task_id": "t-none"})
    assert every.status_code == 200, every.text
    assert every.headers["X-Total-Count"] == "3"
    assert len(every.json()["data"]) == 3
    assert page.headers["X-Total-Count"] == "3"
    assert [r["id"] for r in page.json()["data"]] == [every.json()["data"][1]["id"]]
    assert finished.headers["X-Total-Count"] == "1"
    assert [r["id"] for r in finished.json()["data"]] == [first.run_id]
    assert of_task.headers["X-Total-Count"] == "1"
    assert none.headers["X-Total-Count"] == "0"
    assert none.json()["data"] == []


def test_the_fast_task_encoding_is_the_generic_one() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    task = Task(
        id="t-1",
        title="t",
        instruction="do it",
        agent="shell",
        status=TaskState.RUNNING,
        priority=-3,
        attempts=1,
        max_attempts=3,
        labels=("a", "b"),
        run_after=now,
        idempotency_key="k",
        allow_high=True,
        base_commit=None,
        lease_owner="r-1",
        lease_expires_at=now,
        fencing_token=7,
        created_at=now,
        updated_at=now,
        reason=None,
        depends_on=("t-0",),
    )
    assert task_json(task) == jsonable_encoder(task)
