"""``GET /events`` at fleet scale: many streams share the server's one event reader
(``capataz.api.event_hub``). They all get the same events in order, exactly once;
filters and resumes still hold; and the database reads do not grow with the number
of streams (counted by ``capataz_event_reads_total`` on /metrics)."""

from __future__ import annotations

import re
from contextlib import ExitStack
from typing import Any

from tests.helpers import wait_for

from .conftest import Server
from .test_events import stream

CLIENTS = 20


def _reads(server: Server) -> dict[str, float]:
    text = server.client("viewer").get("/metrics").text
    found = re.findall(r'^capataz_event_reads_total\{reader="(\w+)"\} (\S+)$', text, re.M)
    return {reader: float(value) for reader, value in found}


def _streams(server: Server) -> float:
    text = server.client("viewer").get("/metrics").text
    match = re.search(r"^capataz_event_streams (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


def _all_ids(server: Server, after: int) -> list[int]:
    store = server.store()
    try:
        return [record.id for record in store.events.after(after, limit=10_000)]
    finally:
        store.close()


def _make_tasks(server: Server, count: int, prefix: str) -> list[str]:
    operator = server.client("operator")
    made = [
        operator.post("/ops/tasks", json={"title": f"{prefix}{n}", "instruction": "true"})
        for n in range(count)
    ]
    return [answer.json()["data"]["id"] for answer in made]


def test_many_streams_get_every_event_once_in_order_and_reads_do_not_grow(
    server: Server,
) -> None:
    start = max(_all_ids(server, 0), default=0)
    with ExitStack() as stack:
        clients = [
            stack.enter_context(stream(server, f"/events?after={start}")) for _ in range(CLIENTS)
        ]
        wait_for(lambda: _streams(server) == CLIENTS, f"{CLIENTS} streams on the hub")
        # Idle: the hub keeps reading; the streams read nothing of their own.
        before = _reads(server)
        wait_for(lambda: _reads(server)["hub"] >= before["hub"] + 5, "five hub reads")
        after = _reads(server)
        assert after["client"] == before["client"]

        _make_tasks(server, 15, "fan")
        expected = _all_ids(server, start)
        assert len(expected) == 15
        for client in clients:
            got = client.wait_for(len(expected))
            assert [event["id"] for event in got] == expected
        # Delivering to all of them took hub reads only, none per stream.
        assert _reads(server)["client"] == before["client"]


def test_live_filters_pick_from_the_shared_batches(server: Server) -> None:
    start = max(_all_ids(server, 0), default=0)
    with (
        stream(server, f"/events?after={start}&types=task.state") as states,
        stream(server, f"/events?after={start}") as everything,
    ):
        wait_for(lambda: _streams(server) == 2, "both streams on the hub")
        one, two = _make_tasks(server, 2, "filter")
        operator = server.client("operator")
        operator.post(f"/ops/tasks/{two}/cancel")
        with stream(server, f"/events?after={start}&task_id={one}") as only_one:
            operator.post(f"/ops/tasks/{one}/cancel")
            found = only_one.wait_for(2)
            assert [e["type"] for e in found] == ["task.created", "task.state"]
            states_seen = states.wait_for(2)
            assert [e["task_id"] for e in states_seen] == [two, one]
            everything.wait_for(4)
            assert {e["task_id"] for e in only_one.events()} == {one}
            assert {e["type"] for e in states.events()} == {"task.state"}


def test_resume_across_the_backlog_and_live_boundary_gives_each_event_once(
    server: Server,
) -> None:
    start = max(_all_ids(server, 0), default=0)
    _make_tasks(server, 30, "old")
    middle = _all_ids(server, start)[9]
    # Resuming from the middle of the backlog while new events keep committing.
    with stream(server, "/events", headers={"Last-Event-ID": str(middle)}) as resumed:
        _make_tasks(server, 30, "new")
        expected = _all_ids(server, middle)
        assert len(expected) == 50
        got: list[dict[str, Any]] = resumed.wait_for(len(expected))
        wait_for(lambda: _streams(server) == 1, "the resumed stream on the hub")
        _make_tasks(server, 1, "last")
        got = resumed.wait_for(len(expected) + 1)
        assert [event["id"] for event in got] == _all_ids(server, middle)
