"""The runner's context and batch-record routes over a real server on SQLite and
PostgreSQL: context under the lease only (409 stale, 404 unknown), the server's own
``context_read``/``context_write`` rules, repeatable publishing, and a run's records in
one request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from tests.api.conftest import Server

from capataz.store import NewTask

CONFIG = """
[agents.shell]
command = ["bash", "-c", "{instruction}"]
context_read = ["build.*"]
context_write = ["build.*", "deploy.*"]

[server]
rate_burst = 10000
rate_limit = 10000
"""


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"] if status < 300 else response.json()["error"]


def test_context_is_read_and_published_under_the_lease(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(CONFIG)
    store = server.store()
    try:
        store.tasks.add_many(
            [
                NewTask("a", "x", id="a", agent="shell"),
                NewTask("b", "x", id="b", agent="shell", depends_on=["a"]),
            ]
        )
        with server.client("runner") as api:
            rid = _data(api.post("/runner/register", json={"name": "r"}))["runner_id"]
            a = _data(api.post("/runner/tasks/a/claim", json={"runner_id": rid}))
            token = a["fencing_token"]
            assert _data(api.get("/runner/tasks/a/context", params={"token": token})) == {
                "entries": {}
            }
            assert (
                "not held"
                in _data(api.get("/runner/tasks/a/context", params={"token": token + 1}), 409)[
                    "message"
                ]
            )
            _data(api.get("/runner/tasks/nope/context", params={"token": 1}), 404)

            def publish(entries: dict[str, Any], fencing: int = token) -> httpx.Response:
                body = {"fencing_token": fencing, "entries": entries, "ttl_seconds": 3600}
                return api.post("/runner/tasks/a/context", json=body)

            refused = _data(publish({"build.version": "9", "secret.key": 1}), 422)
            assert "'secret.key'" in refused["message"]
            assert "'bad key!'" in _data(publish({"bad key!": 1}), 422)["message"]
            assert "not held" in _data(publish({"build.version": "9"}, token + 1), 409)["message"]
            _data(
                api.post("/runner/tasks/nope/context", json={"fencing_token": 1, "entries": {}}),
                404,
            )
            entries = {"build.version": "1.2.3", "deploy.url": "http://svc"}
            for _ in range(2):  # the second is the retry of a lost answer
                assert _data(publish(entries)) == {"published": ["build.version", "deploy.url"]}

            report = {"fencing_token": token, "state": "done", "reason": "landed"}
            assert _data(api.post("/runner/tasks/a/complete", json=report))
            assert _data(publish(entries), 409)  # the lease is gone with the run

            b = _data(api.post("/runner/tasks/b/claim", json={"runner_id": rid}))
            received = _data(
                api.get("/runner/tasks/b/context", params={"token": b["fencing_token"]})
            )
            assert received == {"entries": {"build.version": "1.2.3"}}  # context_read: build.*
    finally:
        store.close()


def test_a_run_s_records_go_in_one_request(server: Server) -> None:
    store = server.store()
    try:
        store.tasks.add("a", "x", id="a")
        with server.client("runner") as api:
            rid = _data(api.post("/runner/register", json={"name": "r"}))["runner_id"]
            claimed = _data(api.post("/runner/claim", json={"runner_id": rid}))
            run = claimed["run_id"]
            batch = [
                {"kind": "step", "seq": 1, "phase": "prepare", "status": "started"},
                {"kind": "log", "seq": 2, "text": "hello\n"},
                {
                    "kind": "step",
                    "seq": 3,
                    "phase": "prepare",
                    "status": "finished",
                    "outcome": "ok",
                },
            ]
            url = f"/runner/runs/{run}/records"
            assert _data(api.post(url, json={"records": batch})) == {"recorded": 3, "current": True}
            resent = [*batch, {"kind": "log", "seq": 4, "text": "world\n"}]
            assert _data(api.post(url, json={"records": resent})) == {
                "recorded": 1,
                "current": True,
            }
            bad = [{"kind": "step", "seq": 5, "status": "started"}]  # no phase
            _data(api.post(url, json={"records": bad}), 422)
            _data(api.post("/runner/runs/run-nope/records", json={"records": batch}), 404)
            # An older runner's one-record route still works alongside.
            assert _data(api.post(f"/runner/runs/{run}/log", json={"text": "!\n", "seq": 5}))
            report = {"fencing_token": claimed["fencing_token"], "state": "cancelled"}
            _data(api.post("/runner/tasks/a/complete", json=report))
            late = [{"kind": "log", "seq": 6, "text": "late\n"}]
            assert _data(api.post(url, json={"records": late}))["current"] is False
        detail = store.runs.get(run)
        assert detail.log_tail == "hello\nworld\n!\nlate\n"
        assert [(s.phase, s.outcome) for s in detail.steps] == [("prepare", "ok")]
    finally:
        store.close()


def test_context_and_record_routes_need_a_runner_token(server: Server) -> None:
    calls = [
        ("GET", "/runner/tasks/a/context?token=1", None),
        ("POST", "/runner/tasks/a/context", {"fencing_token": 1, "entries": {}}),
        ("POST", "/runner/runs/r-x/records", {"records": []}),
    ]
    for role, status in (("viewer", 403), ("operator", 403), (None, 401)):
        with server.client(role) as api:
            for method, path, body in calls:
                response = api.request(method, path, json=body)
                assert response.status_code == status, (role, path, response.text)
