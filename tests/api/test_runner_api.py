"""The runner routes (``/runner``) over a real server on SQLite and PostgreSQL: claims
and their 409s, fencing, and every write a runner may repeat after a lost answer."""

from __future__ import annotations

from typing import Any

import httpx
from tests.api.conftest import Server

from capataz.store import NewTask


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"] if status < 300 else response.json()["error"]


def test_claim_fencing_and_repeated_writes(server: Server) -> None:
    store = server.store()
    try:
        store.tasks.add_many(
            [NewTask("dep", "x", id="dep"), NewTask("child", "x", id="child", depends_on=["dep"])]
        )
        with server.client("runner") as api:
            runner = _data(api.post("/runner/register", json={"name": "r", "concurrency": 2}))
            rid = runner["runner_id"]

            error = _data(api.post("/runner/tasks/child/claim", json={"runner_id": rid}), 409)
            assert "waits for dependencies that are not done: dep (ready)" in error["message"]
            assert _data(api.post("/runner/tasks/nope/claim", json={"runner_id": rid}), 404)

            ask = {"runner_id": rid, "lease_seconds": 30, "claim_key": "k-1"}
            claimed = _data(api.post("/runner/claim", json=ask))
            assert claimed["id"] == "dep" and claimed["fencing_token"] == 1
            again = _data(api.post("/runner/claim", json=ask))  # the answer was "lost"
            assert again["run_id"] == claimed["run_id"]
            assert len(store.runs.list(task_id="dep")) == 1
            assert _data(api.post("/runner/claim", json={**ask, "claim_key": "k-2"})) is None

            taken = _data(api.post("/runner/tasks/dep/claim", json={"runner_id": "other"}), 409)
            assert "dep is taken: running on " + rid in taken["message"]

            beat = {"fencing_token": 1, "lease_seconds": 30}
            assert _data(api.post("/runner/tasks/dep/heartbeat", json=beat)) == {"current": True}
            stale = {"fencing_token": 2, "lease_seconds": 30}
            assert (
                "fencing token 2"
                in _data(api.post("/runner/tasks/dep/heartbeat", json=stale), 409)["message"]
            )
            assert _data(api.get("/runner/tasks/dep/current", params={"token": 2})) == {
                "current": False
            }
            assert _data(api.get("/runner/tasks/dep/escalation", params={"token": 1})) is None

            run = claimed["run_id"]
            records = [
                ("steps", {"phase": "prepare", "status": "started", "seq": 1}, True),
                ("steps", {"phase": "prepare", "status": "started", "seq": 1}, False),
                ("log", {"text": "hello\n", "seq": 2}, True),
                ("log", {"text": "hello\n", "seq": 2}, False),  # resent: dropped
                (
                    "steps",
                    {"phase": "prepare", "status": "finished", "outcome": "ok", "seq": 3},
                    True,
                ),
                ("log", {"text": "world\n", "seq": 4}, True),
            ]
            for kind, body, recorded in records:
                answer = _data(api.post(f"/runner/runs/{run}/{kind}", json=body))
                assert answer == {"recorded": recorded}, (kind, body)
            assert _data(api.post("/runner/runs/run-nope/log", json={"text": "x", "seq": 1}), 404)

            report = {
                "fencing_token": 1,
                "state": "done",
                "reason": "landed",
                "decision": "COMPLETED",
                "actor": rid,
                "details": {"outcome": "landed", "exit_code": 0, "from_a_newer_runner": 1},
            }
            assert _data(api.post("/runner/tasks/dep/complete", json=report)) == {"accepted": True}
            assert _data(api.post("/runner/tasks/dep/complete", json=report)) == {"accepted": True}
            failed = {**report, "state": "failed"}
            assert _data(api.post("/runner/tasks/dep/complete", json=failed), 409)

            child = _data(api.post("/runner/tasks/child/claim", json={"runner_id": rid}))
            release = {"fencing_token": child["fencing_token"], "reason": "stopping"}
            for _ in range(2):  # the second is the retry of a lost answer
                assert _data(api.post("/runner/tasks/child/release", json=release)) == {
                    "released": True
                }
            assert _data(api.post(f"/runner/{rid}/stopped"))
            assert _data(api.post("/runner/sweep", json={})) == {"rescued": []}

        detail = store.runs.get(run)
        assert detail.log_tail == "hello\nworld\n"
        assert [(s.phase, s.outcome) for s in detail.steps] == [("prepare", "ok")]
        assert (detail.lifecycle, detail.result, detail.exit_code) == ("finished", "landed", 0)
        task = store.tasks.get("dep")
        assert task.status.value == "done" and task.attempts == 1
        assert store.tasks.get("child").status.value == "ready"
        assert store.audit.verify() is None
    finally:
        store.close()


def test_runner_routes_need_a_runner_token(server: Server) -> None:
    for role, status in (("viewer", 403), ("operator", 403), (None, 401)):
        with server.client(role) as api:
            response = api.post("/runner/claim", json={"runner_id": "r"})
        assert response.status_code == status, (role, response.text)
    with server.client("viewer") as api:
        message = api.post("/runner/claim", json={"runner_id": "r"}).json()["error"]["message"]
    assert message == "role viewer cannot POST /runner/claim; needs runner"


def test_unknown_ids_are_404_and_impossible_arguments_422_by_their_type(server: Server) -> None:
    """Routes let the store's typed refusals through and api/errors.py picks the status:
    an id that names nothing is 404 whatever route it reaches, an argument no queue state
    could make right is 422, a refusal of the current state is 409."""
    store = server.store()
    try:
        store.tasks.add_many([NewTask("t", "x", id="t")])
        with server.client("runner") as api:
            rid = _data(api.post("/runner/register", json={"name": "r"}))["runner_id"]
            for path in ("/runner/r-nope/heartbeat", "/runner/r-nope/stopped"):
                assert "no runner r-nope" in _data(api.post(path), 404)["message"]
            log = {"text": "x", "seq": 1}
            assert (
                "no run run-nope"
                in _data(api.post("/runner/runs/run-nope/log", json=log), 404)["message"]
            )
            claimed = _data(api.post("/runner/claim", json={"runner_id": rid}))
            report = {"fencing_token": claimed["fencing_token"], "state": "ready", "reason": "?"}
            refused = _data(api.post("/runner/tasks/t/complete", json=report), 422)
            assert "a run cannot end a task as ready" in refused["message"]
        with server.client("admin") as api:
            assert _data(api.get("/runs/run-nope"), 404)["code"] == "not_found"
            assert _data(api.get("/ops/tasks/nope"), 404)["code"] == "not_found"
    finally:
        store.close()
