"""Regressions from fuzzing the API (tests/api/test_schema_fuzz.py): inputs the routes
once let through to the database, which failed there with a 5xx (500 on SQLite, a
misleading 503 "database unavailable" on PostgreSQL). Each is now a 422 naming the
field, or a 404 for an id that cannot exist, on both databases."""

from __future__ import annotations

import httpx
from tests.api.conftest import Server

HUGE = 2**64
NUL = "a\x00b"


def _refused(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["message"].startswith(message), body


def test_numbers_beyond_the_columns_are_refused_by_name(server: Server) -> None:
    with server.client("operator") as client:
        _refused(client.get("/ops/tasks", params={"offset": HUGE}), 422, "query.offset:")
        _refused(client.get("/ops/tasks", params={"offset": 2**31}), 422, "query.offset:")
        _refused(client.get("/runs", params={"offset": HUGE}), 422, "query.offset:")
        for field in ("priority", "max_attempts"):
            for value in (2**31, HUGE):
                added = client.post("/ops/tasks", json={"instruction": "x", field: value})
                _refused(added, 422, f"body.{field}: Input should be less than or equal")
        low = client.post("/ops/tasks", json={"instruction": "x", "priority": -(2**31) - 1})
        _refused(low, 422, "body.priority:")
        edge = client.post("/ops/tasks", json={"instruction": "x", "priority": 2**31 - 1})
        assert edge.status_code == 201, edge.text
        assert client.get("/ops/tasks", params={"offset": 2**31 - 1}).json()["data"] == []


def test_a_delay_past_year_9999_is_refused_by_name(server: Server) -> None:
    with server.client("operator") as client:
        added = client.post("/ops/tasks", json={"instruction": "x", "run_after": "99999999h"})
    _refused(added, 422, "body.run_after:")


def test_nul_characters_are_refused_in_every_text_field(server: Server) -> None:
    with server.client("operator") as client:
        task = client.post("/ops/tasks", json={"instruction": "true"}).json()["data"]
        for field, value in (
            ("instruction", NUL),
            ("title", NUL),
            ("agent", NUL),
            ("id", NUL),
            ("idempotency_key", NUL),
            ("run_after", NUL),
            ("labels", [NUL]),
            ("depends_on", [task["id"], NUL]),
        ):
            body = {"instruction": "x", field: value}
            _refused(client.post("/ops/tasks", json=body), 422, f"body.{field}: Value error")
        cancel = client.post(f"/ops/tasks/{task['id']}/cancel", json={"reason": NUL})
        _refused(cancel, 422, "body.reason: Value error")
        _refused(client.get("/runs", params={"task_id": NUL}), 422, "query.task_id:")
        # No id has a NUL: unknown, not a database failure.
        _refused(client.get("/ops/tasks/a%00b"), 404, "no task a")
        _refused(client.get("/runs/a%00b"), 404, "no run a")
        _refused(client.post("/ops/tasks/a%00b/cancel", json={}), 404, "no task a")
        _refused(client.post("/ops/tasks/a%00b/requeue", json={}), 404, "no task a")
        decision = client.post("/ops/escalations/a%00b/decision", json={"decision": "approve"})
        _refused(decision, 404, "no task a")
        assert client.get(f"/ops/tasks/{task['id']}").json()["data"]["status"] == "ready"


def test_a_body_that_is_not_text_is_a_422_on_the_body(server: Server) -> None:
    with server.client("operator") as client:
        sent = client.post(
            "/ops/tasks",
            content=b'{"instruction": "\xff"}',  # not UTF-8 (nor a UTF-16/32 BOM)
            headers={"Content-Type": "application/json"},
        )
    _refused(sent, 422, "body: JSON decode error")


def test_what_a_route_lets_through_but_the_database_cannot_hold_is_a_422(
    server: Server,
) -> None:
    """The safety net under the routes' own checks, shown on an endpoint that does not
    bound its numbers: the database's refusal becomes a 422 saying why, not a 5xx."""
    with server.client("admin") as client:
        registered = client.post("/runner/register", json={"name": "n", "pid": HUGE})
    _refused(registered, 422, "a value in the request does not fit:")
