"""A stopping remote runner gives up its long-poll claim at once
(:meth:`RemoteQueue.interrupt`), and a task that claim still got is released instead
of staying leased until the sweeper rescues it. The server is an httpx MockTransport
that holds the claim until the test lets it answer."""

from __future__ import annotations

import json
import threading

import httpx

from capataz.runner.remote import RemoteQueue
from capataz.store import ClaimedTask

CLAIMED = {
    "id": "late",
    "run_id": "run-late",
    "title": "late",
    "instruction": "true",
    "agent": "shell",
    "labels": [],
    "allow_high": False,
    "base_commit": None,
    "attempt": 1,
    "max_attempts": 3,
    "fencing_token": 7,
    "lease_expires_at": "2030-01-01T00:00:00+00:00",
}


class HeldClaims:
    """Answers a claim only once ``answer`` is set; records releases."""

    def __init__(self) -> None:
        self.in_flight = threading.Event()
        self.answer = threading.Event()
        self.released = threading.Event()
        self.claims = 0
        self.releases: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/runner/claim":
            self.claims += 1
            self.in_flight.set()
            self.answer.wait(30)
            return httpx.Response(200, json={"ok": True, "data": CLAIMED})
        if request.url.path == "/runner/tasks/late/release":
            self.releases.append(json.loads(request.content))
            self.released.set()
            return httpx.Response(200, json={"ok": True, "data": {"released": True}})
        return httpx.Response(404, json={"ok": False, "error": {"code": "x", "message": "no"}})


def test_an_interrupted_long_poll_answers_none_and_gives_back_what_it_got_late() -> None:
    server = HeldClaims()
    queue = RemoteQueue("http://plane", "cap_test", transport=httpx.MockTransport(server))
    got: list[ClaimedTask | None] = []
    claiming = threading.Thread(target=lambda: got.append(queue.leases.claim("r1", wait=20)))
    claiming.start()
    try:
        assert server.in_flight.wait(30), "the claim reached the server"
        queue.interrupt()
        claiming.join(timeout=10)  # returns as soon as the claim gives up
        assert not claiming.is_alive(), "the claim still waits for its answer"
        assert got == [None]
        server.answer.set()  # the server answers the abandoned claim with a task...
        assert server.released.wait(30), "...which is released, not left leased"
        assert server.releases[0]["fencing_token"] == 7
        # A stopping runner waits in no later long poll: None, without asking.
        assert queue.leases.claim("r1", wait=20) is None
        assert server.claims == 1
    finally:
        server.answer.set()
        claiming.join(timeout=30)
        queue.close()


def test_a_long_poll_that_is_not_interrupted_returns_its_task() -> None:
    server = HeldClaims()
    server.answer.set()
    queue = RemoteQueue("http://plane", "cap_test", transport=httpx.MockTransport(server))
    try:
        claimed = queue.leases.claim("r1", wait=20)
        assert claimed is not None and claimed.id == "late" and claimed.fencing_token == 7
        assert queue.leases.is_current("late", 7)  # tracked as held, no request needed
        assert not server.releases
    finally:
        queue.close()
