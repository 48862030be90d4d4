"""The planner through a real ``capataz serve``: ``POST /ops/gpt/run`` in the runbook's
shape, ``/ops/directives`` to list, show, apply and reject, and every failure of the
model API as an envelope with its status (docs/planner.md). The model is the fake
OpenAI-compatible server on loopback, reached by the real ``openai`` SDK in the server.

SQLite only: what is tested is the HTTP surface; the store's directives are tested on
both databases in tests/store/test_directives.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agents.fake_models.openai_chat import FakeOpenAIChat
from tests.api.conftest import Server
from tests.api.test_runbook import runbook_shell
from tests.planner.conftest import AGENTS, GOOD

KEY = "sk-api-planner-key-0123456789"


@pytest.fixture
def queue_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


def _config(base: str, extra: str = "") -> str:
    return (
        "[server]\nrate_burst = 10000\nrate_limit = 10000\n\n"
        f'[planner]\nendpoint = "{base}"\nmodel = "fake-planner"\ntimeout = "10s"\n{extra}\n'
        '[[requests]]\nid = "REQ-009"\nsecret = "OPENAI_API_KEY"\n' + AGENTS
    )


def _with_key(start_server: Callable[..., Server], config: str) -> Server:
    server = start_server(config)
    with server.client("operator") as client:
        response = client.post("/ops/requests/REQ-009/value", json={"value": KEY})
    assert response.status_code == 200, response.text
    return server


def test_gpt_run_and_directives_as_the_runbook_calls_them(
    start_server: Callable[..., Server],
) -> None:
    fake = FakeOpenAIChat(answer=GOOD)
    with fake as base:
        server = start_server(_config(base))
        with server.client("operator") as client:
            waiting = client.post("/ops/gpt/run", json={"goal": "ship it"})
            assert waiting.status_code == 409
            error = waiting.json()["error"]
            assert error["code"] == "credential_waiting"
            assert "REQ-009" in error["message"]
            assert "capataz secret set OPENAI_API_KEY" in error["message"]
            provided = client.post("/ops/requests/REQ-009/value", json={"value": KEY})
            assert provided.status_code == 200, provided.text

            ran = client.post("/ops/gpt/run", json={"environment": "staging", "goal": "ship it"})
        assert ran.status_code == 200, ran.text
        body = ran.json()
        assert set(body) == {"ok", "data"}
        assert body["ok"] is True
        data = body["data"]
        assert set(data) == {"directives_created", "tasks_created", "directives", "model", "usage"}
        assert (data["directives_created"], data["tasks_created"]) == (1, 0)
        assert data["model"] == "fake-planner"
        assert data["usage"]["total_tokens"] == 1290
        assert KEY not in ran.text
        sent = fake.completions[0].body["messages"][1]["content"]
        assert "## Goal\nship it" in sent
        assert "## Environment\nstaging" in sent

    directive_id = data["directives"][0]["id"]
    with server.client("viewer") as viewer:
        listed = viewer.get("/ops/directives")
        assert listed.status_code == 200
        assert listed.headers["X-Total-Count"] == "1"
        (row,) = listed.json()["data"]
        assert (row["id"], row["title"], row["status"]) == (
            directive_id,
            "Build, then test",
            "PENDING",
        )
        assert [t["name"] for t in row["tasks"]] == ["build", "test", "docs"]
        assert viewer.get("/ops/directives?status=APPLIED").json()["data"] == []
        one = viewer.get(f"/ops/directives/{directive_id}")
        assert one.json()["data"]["rationale"] == "tests need the build"
        missing = viewer.get("/ops/directives/d-nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"].startswith("no directive d-nope")
        assert viewer.post(f"/ops/directives/{directive_id}/apply").status_code == 403

    with server.client("operator") as client:
        applied = client.post(f"/ops/directives/{directive_id}/apply")
        assert applied.status_code == 200, applied.text
        result = applied.json()["data"]
        assert result["status"] == "APPLIED"
        created = result["created_tasks"]
        assert [t["status"] for t in created] == ["ready", "pending", "pending"]
        assert created[2]["depends_on"] == [created[1]["id"]]
        tasks = client.get("/ops/tasks").json()["data"]
        assert [t["id"] for t in tasks] == result["created_task_ids"]
        again = client.post(f"/ops/directives/{directive_id}/apply")
        assert again.status_code == 409
        assert "already APPLIED" in again.json()["error"]["message"]
        refused = client.post(f"/ops/directives/{directive_id}/reject", json={"reason": "late"})
        assert refused.status_code == 409
        assert client.post(f"/ops/directives/{directive_id}/reject", json={}).status_code == 422


def test_rejecting_a_pending_directive(start_server: Callable[..., Server]) -> None:
    with FakeOpenAIChat(answer=GOOD) as base:
        server = _with_key(start_server, _config(base))
        with server.client("operator") as client:
            data = client.post("/ops/gpt/run").json()["data"]
            directive_id = data["directives"][0]["id"]
            rejected = client.post(
                f"/ops/directives/{directive_id}/reject", json={"reason": "not now"}
            )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["data"]["status"] == "REJECTED"
    assert rejected.json()["data"]["reason"] == "not now"


@pytest.mark.parametrize(
    ("scenario", "extra", "status", "code", "says"),
    [
        ("unauthorized", "", 502, "planner_unauthorized", "refused the key (401)"),
        ("rate_limited", "max_retries = 0", 503, "planner_rate_limited", "rate limiting (429)"),
        ("hang", 'timeout = "1s"', 504, "planner_timeout", "did not answer within 1 s"),
    ],
    ids=["401", "429", "timeout"],
)
def test_model_api_failures_are_envelopes_with_their_status(
    start_server: Callable[..., Server],
    scenario: str,
    extra: str,
    status: int,
    code: str,
    says: str,
) -> None:
    with FakeOpenAIChat(scenario) as base:  # type: ignore[arg-type]
        config = _config(base, extra)
        if "timeout" in extra:
            config = config.replace('timeout = "10s"\n', "")
        server = _with_key(start_server, config)
        with server.client("operator") as client:
            response = client.post("/ops/gpt/run", json={})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]
    assert KEY not in response.text
    with server.client("viewer") as viewer:
        assert viewer.get("/ops/directives").json()["data"] == []
        planner = viewer.get("/ops/metrics").json()["data"]["planner"]
        prometheus = viewer.get("/metrics").text
    # The failed call is on the record, and counted as failed.
    assert (planner["calls"], planner["failed"]) == (1, 1)
    assert 'capataz_planner_calls_total{model="fake-planner",result="failed"} 1.0' in prometheus


def test_without_a_planner_table_gpt_run_is_a_409(server: Server) -> None:
    with server.client("operator") as client:
        response = client.post("/ops/gpt/run", json={"goal": "x"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "planner_not_configured"
    assert "docs/planner.md" in response.json()["error"]["message"]


def test_the_runbook_curl_commands(start_server: Callable[..., Server]) -> None:
    """docs/runbook.md's rows, as written: curl's ``-d`` without a Content-Type, jq."""
    with FakeOpenAIChat(answer=GOOD) as base:
        server = _with_key(start_server, _config(base))
        script = (
            'curl -s -X POST "$API_BASE_URL/ops/gpt/run" -H "Authorization: Bearer $T" '
            """-d '{"environment":"prod","goal":"ship"}' | jq -c '.data | """
            "{directives_created, tasks_created, model}' && "
            'curl -s "$API_BASE_URL/ops/directives" -H "Authorization: Bearer $T" '
            "| jq -c '.data[] | {title,status}'"
        )
        answered = runbook_shell(server, script, timeout=60)
    assert answered.splitlines() == [
        '{"directives_created":1,"tasks_created":0,"model":"fake-planner"}',
        '{"title":"Build, then test","status":"PENDING"}',
    ]


E2E_PLAN = json.dumps(
    {
        "directives": [
            {
                "title": "Greeting module, then its test",
                "rationale": "the test imports the module",
                "tasks": [
                    {
                        "name": "module",
                        "title": "Add greet.py",
                        "instruction": "printf 'def greet():\\n    return 1\\n' > greet.py",
                        "agent": None,
                        "depends_on": [],
                        "labels": [],
                        "priority": None,
                    },
                    {
                        "name": "test",
                        "title": "Test greet",
                        "instruction": "python3 -c 'import greet' && echo ok > test_ok.txt",
                        "agent": None,
                        "depends_on": ["module"],
                        "labels": [],
                        "priority": None,
                    },
                ],
            }
        ]
    }
)


@pytest.mark.timeout(240)
def test_the_runbooks_end_to_end_flow(start_server: Callable[..., Server]) -> None:
    """The runbook's "Flujo completo": gpt/run (auto_apply, as the runbook has it) →
    tasks ready → a runner → runs, each step as the runbook's curl | jq line."""
    with FakeOpenAIChat(answer=E2E_PLAN) as base:
        server = _with_key(start_server, _config(base, "auto_apply = true"))
        planned = runbook_shell(
            server,
            'curl -s -X POST "$API_BASE_URL/ops/gpt/run" -H "Authorization: Bearer $T" '
            """-d '{"environment":"production"}' | jq -c '.data | """
            "{directives_created, tasks_created, status: .directives[0].status}' && "
            'curl -s "$API_BASE_URL/ops/tasks?status=ready" -H "Authorization: Bearer $T" '
            "| jq '.data | length'",
            timeout=60,
        )
    assert planned.splitlines() == [
        '{"directives_created":1,"tasks_created":2,"status":"APPLIED"}',
        "1",  # the test waits for the module
    ]
    runner = subprocess.run(
        [sys.executable, "-m", "capataz", "runner", "run", "--exit-when-idle"],
        cwd=server.repo,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert runner.returncode == 0, runner.stderr
    answered = runbook_shell(
        server,
        'curl -s "$API_BASE_URL/ops/metrics" -H "Authorization: Bearer $T" '
        "| jq -c '{done: .data.tasks.done, planner: .data.planner.calls}' && "
        'curl -s "$API_BASE_URL/runs" -H "Authorization: Bearer $T" '
        "| jq -c '.data[0:3][] | {task_title, result, decision}'",
    )
    assert answered.splitlines() == [
        '{"done":2,"planner":1}',
        '{"task_title":"Test greet","result":"landed","decision":"COMPLETED"}',
        '{"task_title":"Add greet.py","result":"landed","decision":"COMPLETED"}',
    ]
    log = subprocess.run(
        ["git", "log", "--format=%s", "main"], cwd=server.repo, capture_output=True, text=True
    )
    assert log.stdout.splitlines()[:2] == ["Test greet", "Add greet.py"]
