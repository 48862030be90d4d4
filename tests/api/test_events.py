"""``GET /events`` over real HTTP: Server-Sent Events that arrive live, filter by task
and type, resume after Last-Event-ID, and refuse what they should."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from tests.helpers import wait_for

from .conftest import Server


class Frames:
    """Reads SSE frames off an open response on a thread, so a test can act and then
    wait for what the stream says about it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.frames: list[dict[str, str]] = []
        self.comments: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        current: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if not line:
                    if current:
                        self.frames.append(current)
                    current = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(":")
                    current[field] = value.removeprefix(" ")
        except httpx.HTTPError:
            return

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(f["data"]) for f in list(self.frames) if "data" in f]

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        return wait_for(
            lambda: len(self.events()) >= count and self.events(),
            f"{count} events (so far {self.events()})",
        )


@contextmanager
def stream(
    server: Server, path: str = "/events", headers: dict[str, str] | None = None
) -> Iterator[Frames]:
    with (
        server.client("viewer") as client,
        client.stream("GET", path, headers=headers or {}, timeout=30) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Frames(response)


def test_events_arrive_live_and_resume_after_last_event_id(server: Server) -> None:
    operator = server.client("operator")
    with stream(server) as live:
        # The stream starts after the last event when it opened, which its first comment
        # names: what is created from now on is live.
        wait_for(lambda: live.comments, "the stream's opening comment")
        made = operator.post("/ops/tasks", json={"title": "one", "instruction": "true"})
        task_id = made.json()["data"]["id"]
        operator.post(f"/ops/tasks/{task_id}/cancel")
        first, second = live.wait_for(2)[:2]
        assert live.comments[0].startswith(": capataz events after")
        assert live.frames[0] == {"retry": "2000"}  # reconnect after 2 s
        frame = live.frames[1]
        assert frame["event"] == "task.created" and frame["id"] == str(first["id"])
    assert first["type"] == "task.created" and first["version"] == 1
    assert first["task_id"] == task_id and first["data"]["title"] == "one"
    assert second["type"] == "task.state" and second["data"]["status"] == "cancelled"

    # A client that reconnects with the last id it saw gets what it missed, and only that.
    operator.post("/ops/tasks", json={"title": "two", "instruction": "true"})
    with stream(server, headers={"Last-Event-ID": str(first["id"])}) as resumed:
        missed = resumed.wait_for(2)
        assert [e["type"] for e in missed] == ["task.state", "task.created"]
        assert missed[1]["data"]["title"] == "two"
    with stream(server, "/events?after=0") as everything:
        assert len(everything.wait_for(3)) == 3


def test_events_filter_by_task_and_type(server: Server) -> None:
    operator = server.client("operator")
    one = operator.post("/ops/tasks", json={"title": "one", "instruction": "true"}).json()
    two = operator.post("/ops/tasks", json={"title": "two", "instruction": "true"}).json()
    one_id, two_id = one["data"]["id"], two["data"]["id"]
    operator.post(f"/ops/tasks/{one_id}/cancel")
    operator.post(f"/ops/tasks/{two_id}/cancel")
    with stream(server, f"/events?after=0&task_id={two_id}") as only_two:
        found = only_two.wait_for(2)
        time.sleep(0.5)
        assert {e["task_id"] for e in only_two.events()} == {two_id}
        assert [e["type"] for e in found] == ["task.created", "task.state"]
    with stream(server, "/events?after=0&types=task.state") as states:
        states.wait_for(2)
        time.sleep(0.5)
        assert [e["task_id"] for e in states.events()] == [one_id, two_id]


def test_events_refuse_bad_input_and_missing_tokens(server: Server) -> None:
    anonymous = server.client()
    refused = anonymous.get("/events")
    assert refused.status_code == 401 and refused.json()["ok"] is False
    viewer = server.client("viewer")
    bad_type = viewer.get("/events?types=task.created,task.exploded")
    assert bad_type.status_code == 422
    assert "task.exploded" in bad_type.json()["error"]["message"]
    bad_id = viewer.get("/events", headers={"Last-Event-ID": "yesterday"})
    assert bad_id.status_code == 422
    assert "Last-Event-ID" in bad_id.json()["error"]["message"]
    assert viewer.get("/events?after=-1").status_code == 422
