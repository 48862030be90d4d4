"""Every endpoint but /health refuses a missing, unknown or revoked token (401) and a
role it does not serve (403, naming the role, the route and the role it needs)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from tests.api.conftest import ROLES, Server

READ = {"viewer", "operator", "admin"}
OPERATE = {"operator", "admin"}
ADMIN = {"admin"}
RUNNER = {"runner", "admin"}
_TOKEN = {"fencing_token": 1}

# method, path as called, path as the route names it, who may call it, body
ROUTES: list[tuple[str, str, str, set[str], dict[str, Any] | None]] = [
    ("GET", "/ops/metrics", "/ops/metrics", READ, None),
    ("GET", "/ops/runner/status", "/ops/runner/status", READ, None),
    ("GET", "/ops/tasks", "/ops/tasks", READ, None),
    ("POST", "/ops/tasks", "/ops/tasks", OPERATE, {"instruction": "true"}),
    ("GET", "/ops/tasks/t-x", "/ops/tasks/{task_id}", READ, None),
    ("POST", "/ops/tasks/t-x/requeue", "/ops/tasks/{task_id}/requeue", OPERATE, {}),
    ("POST", "/ops/tasks/t-x/cancel", "/ops/tasks/{task_id}/cancel", OPERATE, {}),
    ("GET", "/runs", "/runs", READ, None),
    ("GET", "/runs/r-x", "/runs/{run_id}", READ, None),
    ("GET", "/ops/escalations", "/ops/escalations", READ, None),
    # An unknown type makes allowed roles get a 422 instead of an endless stream.
    ("GET", "/events?types=nope", "/events", READ, None),
    (
        "POST",
        "/ops/escalations/t-x/decision",
        "/ops/escalations/{task_id}/decision",
        OPERATE,
        {"decision": "approve"},
    ),
    ("DELETE", "/ops/runners/r-x", "/ops/runners/{runner_id}", ADMIN, None),
    ("GET", "/ops/requests", "/ops/requests", READ, None),
    (
        "POST",
        "/ops/requests/REQ-x/value",
        "/ops/requests/{request_id}/value",
        OPERATE,
        {"value": "v"},
    ),
    ("GET", "/metrics", "/metrics", READ, None),
    # the planner (routes/planner.py); without [planner] an allowed role gets a 409
    ("POST", "/ops/gpt/run", "/ops/gpt/run", OPERATE, {}),
    ("GET", "/ops/directives", "/ops/directives", READ, None),
    ("GET", "/ops/directives/d-x", "/ops/directives/{directive_id}", READ, None),
    ("POST", "/ops/directives/d-x/apply", "/ops/directives/{directive_id}/apply", OPERATE, None),
    (
        "POST",
        "/ops/directives/d-x/reject",
        "/ops/directives/{directive_id}/reject",
        OPERATE,
        {"reason": "no"},
    ),
    # remote runners (routes/runner.py)
    ("POST", "/runner/register", "/runner/register", RUNNER, {"name": "access-test"}),
    ("POST", "/runner/r-x/heartbeat", "/runner/{runner_id}/heartbeat", RUNNER, None),
    ("POST", "/runner/r-x/stopped", "/runner/{runner_id}/stopped", RUNNER, None),
    ("GET", "/runner/metrics", "/runner/metrics", RUNNER, None),
    ("POST", "/runner/sweep", "/runner/sweep", RUNNER, {}),
    ("POST", "/runner/claim", "/runner/claim", RUNNER, {"runner_id": "r-x"}),
    (
        "POST",
        "/runner/tasks/t-x/claim",
        "/runner/tasks/{task_id}/claim",
        RUNNER,
        {"runner_id": "r"},
    ),
    ("POST", "/runner/tasks/t-x/heartbeat", "/runner/tasks/{task_id}/heartbeat", RUNNER, _TOKEN),
    ("GET", "/runner/tasks/t-x/current?token=1", "/runner/tasks/{task_id}/current", RUNNER, None),
    ("GET", "/runner/tasks/t-x/secrets?token=1", "/runner/tasks/{task_id}/secrets", RUNNER, None),
    ("POST", "/runner/tasks/t-x/release", "/runner/tasks/{task_id}/release", RUNNER, _TOKEN),
    (
        "POST",
        "/runner/tasks/t-x/complete",
        "/runner/tasks/{task_id}/complete",
        RUNNER,
        {**_TOKEN, "state": "done"},
    ),
    (
        "GET",
        "/runner/tasks/t-x/escalation?token=1",
        "/runner/tasks/{task_id}/escalation",
        RUNNER,
        None,
    ),
    (
        "POST",
        "/runner/tasks/t-x/escalation",
        "/runner/tasks/{task_id}/escalation",
        RUNNER,
        {**_TOKEN, "reason": "why"},
    ),
    (
        "POST",
        "/runner/runs/r-x/steps",
        "/runner/runs/{run_id}/steps",
        RUNNER,
        {"phase": "p", "status": "started"},
    ),
    ("POST", "/runner/runs/r-x/log", "/runner/runs/{run_id}/log", RUNNER, {"text": "x"}),
    ("POST", "/runner/runs/r-x/records", "/runner/runs/{run_id}/records", RUNNER, {"records": []}),
    ("GET", "/runner/tasks/t-x/context?token=1", "/runner/tasks/{task_id}/context", RUNNER, None),
    (
        "POST",
        "/runner/tasks/t-x/context",
        "/runner/tasks/{task_id}/context",
        RUNNER,
        {**_TOKEN, "entries": {}},
    ),
]


def test_the_route_table_covers_the_openapi_document(server: Server) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    served = {
        (method.upper(), path)
        for path, ops in document["paths"].items()
        for method in ops
        if path != "/health"
    }
    assert served == {(method, route) for method, _, route, _, _ in ROUTES}
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_every_endpoint_checks_token_and_role(server: Server) -> None:
    failures = []
    for method, path, route, allowed, body in ROUTES:
        with server.client() as client:
            missing = client.request(method, path, json=body)
        with server.client(token="cap_not-a-token") as client:
            wrong = client.request(method, path, json=body)
        for response, message in ((missing, "missing bearer token"), (wrong, "invalid token")):
            if response.status_code != 401 or response.json() != {
                "ok": False,
                "error": {"code": "unauthorized", "message": message},
            }:
                failures.append((method, path, response.status_code, response.text))
        for role in ROLES:
            with server.client(role) as client:
                response = client.request(method, path, json=body)
            if role in allowed:
                if response.status_code in (401, 403) and "disabled" not in response.text:
                    failures.append((method, path, role, response.status_code, response.text))
                continue
            payload = response.json()
            needs = min(allowed, key=["viewer", "operator", "runner", "admin"].index)
            expected = f"role {role} cannot {method} {route}; needs {needs}"
            if response.status_code != 403 or payload["error"]["message"] != expected:
                failures.append((method, path, role, response.status_code, response.text))
    assert failures == []


def test_health_needs_no_token(server: Server) -> None:
    with server.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "ok"
    assert response.json()["data"]["version"]


def test_rate_limit_answers_429_with_retry_after(start_server: Any) -> None:
    server = start_server("[server]\nrate_limit = 0.2\nrate_burst = 3\n")
    with server.client("viewer") as client:
        codes = [client.get("/ops/metrics").status_code for _ in range(4)]
        refused = client.get("/ops/metrics")
    assert codes[:3] == [200, 200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    with server.client("operator") as other:  # the bucket is per token
        assert other.get("/ops/metrics").status_code == 200


def test_destructive_operations_need_the_server_flag(start_server: Any) -> None:
    guarded = start_server()
    with guarded.client("admin") as client:
        response = client.delete("/ops/runners/r-x")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "disabled"
    assert "[server] allow_destructive" in response.json()["error"]["message"]

    allowed = start_server("[server]\nallow_destructive = true\n")
    store = allowed.store()
    try:
        runner = store.runners.register("old", hostname="h", pid=1, concurrency=1)
        store.runners.mark_stopped(runner)
    finally:
        store.close()
    with allowed.client("admin") as client:
        assert client.delete("/ops/runners/r-unknown").status_code == 404
        response = client.delete(f"/ops/runners/{runner}")
        assert response.status_code == 200, response.text
        assert client.get("/ops/runner/status").json()["data"] == []


@pytest.mark.parametrize("role", ["viewer"])
def test_revoked_token_is_refused(server: Server, role: str) -> None:
    created = server.cli("token", "create", "--role", role, "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cap_")
    with server.client(token=token) as client:
        assert client.get("/ops/tasks").status_code == 200
    listed = server.cli("token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert token not in listed.stdout
    ours = next(row for row in json.loads(listed.stdout) if row["name"] == "ci")
    assert ours["last_used_at"] is not None
    revoked = server.cli("token", "revoke", str(ours["id"]))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.1)  # the server remembers a token for at most a second
    with server.client(token=token) as client:
        response = client.get("/ops/tasks")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid token"
