"""Credential requests over HTTP: the runbook's ``GET /ops/requests`` (docs/runbook.md), the panel's Setup
(``POST /ops/requests/{id}/value``) and the secrets a remote runner may fetch."""

from __future__ import annotations

import json
from typing import Any

from tests.api.conftest import Server

from capataz.secrets.vault import MasterKey, Vault

VALUE = "sk-api-3e8f-plaintext"
CONFIG = """
[server]
rate_burst = 10000
rate_limit = 10000

[agents.gpt]
command = ["bash", "-c", "{instruction}"]
secrets = ["OPENAI_API_KEY"]

[[gates]]
name = "lint"
run = "true"
secrets = ["LINT_TOKEN"]

[[requests]]
id = "REQ-009"
secret = "OPENAI_API_KEY"
description = "OpenAI API Key (OPENAI_API_KEY para GPT)"
agents = ["gpt"]

[[requests]]
id = "REQ-010"
secret = "LINT_TOKEN"
"""


def _request(server: Server, request_id: str) -> dict[str, Any]:
    with server.client("viewer") as client:
        response = client.get("/ops/requests")
    assert response.status_code == 200, response.text
    (found,) = [r for r in response.json()["data"] if r["id"] == request_id]
    return dict(found)


def test_requests_go_from_waiting_to_provided_and_never_echo_the_value(
    start_server: Any,
) -> None:
    server: Server = start_server(CONFIG)
    assert _request(server, "REQ-009") == {
        "id": "REQ-009",
        "secret": "OPENAI_API_KEY",
        "name": "OPENAI_API_KEY",
        "description": "OpenAI API Key (OPENAI_API_KEY para GPT)",
        "status": "WAITING",
        "agents": ["gpt"],
    }
    with server.client("operator") as client:
        response = client.post("/ops/requests/REQ-009/value", json={"value": VALUE})
    assert response.status_code == 200, response.text
    assert VALUE not in response.text
    assert response.json()["data"]["status"] == "PROVIDED"
    assert _request(server, "REQ-009")["status"] == "PROVIDED"
    assert _request(server, "REQ-010")["status"] == "WAITING"

    listed = server.cli("request", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"]: r["status"] for r in json.loads(listed.stdout)} == {
        "REQ-009": "PROVIDED",
        "REQ-010": "WAITING",
    }
    store = server.store()
    try:  # stored encrypted with the served repository's key file
        (row,) = store.secrets.rows(["OPENAI_API_KEY"])
        assert VALUE not in row.ciphertext and row.updated_by == "api:test-operator"
        key = MasterKey.load(server.repo / ".capataz", create=False)
        assert Vault(store, key).get("OPENAI_API_KEY") == VALUE
    finally:
        store.close()
    for path in (server.repo / ".capataz").rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path


def test_unknown_request_and_empty_value_are_refused(start_server: Any) -> None:
    server: Server = start_server(CONFIG)
    with server.client("operator") as client:
        unknown = client.post("/ops/requests/REQ-404/value", json={"value": "x"})
        empty = client.post("/ops/requests/REQ-009/value", json={"value": ""})
        missing = client.post("/ops/requests/REQ-009/value", json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no credential request REQ-404"
    assert empty.status_code == 422 and "body.value" in empty.json()["error"]["message"]
    assert missing.status_code == 422
    assert _request(server, "REQ-009")["status"] == "WAITING"


def test_a_remote_runner_gets_its_tasks_secrets_only_under_the_lease(
    start_server: Any,
) -> None:
    server: Server = start_server(CONFIG)
    with server.client("operator") as client:
        for request_id, value in (("REQ-009", VALUE), ("REQ-010", "lint-ok")):
            assert client.post(f"/ops/requests/{request_id}/value", json={"value": value})
    store = server.store()
    try:
        store.tasks.add("t", "true", agent="gpt", id="t-gpt")
        store.tasks.add("t", "true", agent="shell", id="t-shell")
        runner = store.runners.register("r", hostname="h", pid=1, concurrency=2)
        claimed = {}
        for _ in range(2):
            task = store.leases.claim(runner, 30)
            assert task is not None
            claimed[task.id] = task.fencing_token
    finally:
        store.close()
    with server.client("runner") as client:
        gpt = client.get("/runner/tasks/t-gpt/secrets", params={"token": claimed["t-gpt"]})
        shell = client.get("/runner/tasks/t-shell/secrets", params={"token": claimed["t-shell"]})
        stale = client.get("/runner/tasks/t-gpt/secrets", params={"token": 999})
        unknown = client.get("/runner/tasks/t-nope/secrets", params={"token": 1})
    assert gpt.status_code == 200, gpt.text
    assert gpt.json()["data"]["values"] == {"OPENAI_API_KEY": VALUE, "LINT_TOKEN": "lint-ok"}
    assert shell.json()["data"]["values"] == {"LINT_TOKEN": "lint-ok"}  # gates only
    assert stale.status_code == 409 and VALUE not in stale.text
    assert unknown.status_code == 404
