"""The runbook's endpoints (docs/runbook.md) over real HTTP: envelopes on every path, field names,
validation naming the field, pagination, and tasks, runs, escalations and metrics
that agree with the store and the CLI."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from tests.api.conftest import Server

from capataz.store import RunDetails


def test_errors_are_envelopes_with_the_right_status(server: Server) -> None:
    with server.client("operator") as client:
        cases = {
            404: [client.get("/nope"), client.get("/ops/tasks/t-missing"), client.get("/runs/r-x")],
            405: [client.put("/ops/metrics")],
            409: [],
            422: [
                client.post("/ops/tasks", json={"title": "no instruction"}),
                client.get("/ops/tasks", params={"status": "sleeping"}),
                client.get("/ops/tasks", params={"limit": 0}),
            ],
        }
        task = client.post("/ops/tasks", json={"instruction": "true"}).json()["data"]
        cases[409].append(client.post(f"/ops/tasks/{task['id']}/requeue", json={}))
        agent = client.post("/ops/tasks", json={"instruction": "x", "agent": "nobody"})
        bad = client.post(f"/ops/tasks/{task['id']}/requeue", json={"backoff_seconds": "soon"})
    for status, responses in cases.items():
        for response in responses:
            assert response.status_code == status, response.text
            body = response.json()
            assert body["ok"] is False
            assert set(body["error"]) == {"code", "message"}
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith(
        "body.backoff_seconds: Input should be a valid number"
    )
    assert agent.status_code == 422
    assert agent.json()["error"]["message"].startswith("body.agent: unknown agent")
    assert cases[422][0].json()["error"]["message"] == "body.instruction: Field required"
    assert cases[422][1].json()["error"]["message"].startswith("query.status:")


def test_tasks_over_the_api_are_the_cli_tasks(server: Server) -> None:
    with server.client("operator") as client:
        created = [
            client.post("/ops/tasks", json={"instruction": f"echo {n}", "priority": n})
            for n in range(5)
        ]
        assert [r.status_code for r in created] == [201] * 5
        ids = [r.json()["data"]["id"] for r in created]
        page = client.get("/ops/tasks", params={"status": "ready", "limit": 2, "offset": 2})
        cancelled = client.post(f"/ops/tasks/{ids[0]}/cancel", json={"reason": "not needed"})
        requeued = client.post(f"/ops/tasks/{ids[0]}/requeue", json={"backoff_seconds": 60})
        shown = client.get(f"/ops/tasks/{ids[0]}").json()["data"]
    assert page.headers["X-Total-Count"] == "5"
    assert [t["id"] for t in page.json()["data"]] == ids[2:4]
    assert cancelled.json()["data"]["status"] == "cancelled"
    assert cancelled.json()["data"]["reason"] == "not needed"
    assert requeued.json()["data"]["status"] == "ready"
    assert shown["run_after"] > shown["created_at"]
    listed = server.cli("task", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {t["id"] for t in json.loads(listed.stdout)} == set(ids)


def test_runs_and_metrics_use_the_runbook_field_names(server: Server) -> None:
    store = server.store()
    try:
        task = store.tasks.add("fails", "false")
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=1)
        claimed = store.leases.claim(runner)
        assert claimed is not None
        store.runs.step_started(claimed.run_id, "agent")
        store.runs.append_log(claimed.run_id, "hello from the agent\n")
        store.runs.step_finished(claimed.run_id, "agent", "ok")
        details = RunDetails(
            outcome="rejected",
            wall_seconds=3.5,
            file_changes=[{"path": "a.py", "kind": "modified"}],
            violations=[{"type": "protected_path", "severity": "high"}],
            decisions=[{"phase": "gates", "decision": "reject", "reason": "protected"}],
        )
        assert store.leases.complete(task.id, claimed.fencing_token, "blocked", details=details)
    finally:
        store.close()
    with server.client("viewer") as client:
        metrics = client.get("/ops/metrics").json()["data"]
        runners = client.get("/ops/runner/status").json()["data"]
        runs = client.get("/runs", params={"task_id": task.id}).json()["data"]
        run = client.get(f"/runs/{claimed.run_id}").json()["data"]
        prometheus = client.get("/metrics")
    assert metrics["tasks"]["blocked"] == 1
    assert metrics["runners"] == {"online": 1, "offline": 0}
    assert metrics["runs"]["fail_rate_last_20"] == 1.0
    assert metrics["backlog"]["oldest_ready_age_seconds"] is None
    assert runners[0]["id"] == runner
    assert runners[0]["status"] == "online"
    assert runners[0]["last_seen_at"]
    assert [r["id"] for r in runs] == [claimed.run_id]
    assert {"id", "task_id", "status", "started_at"} <= set(runs[0])
    assert [s["phase"] for s in run["steps"]] == ["agent"]
    assert run["file_changes"][0]["path"] == "a.py"
    assert run["violations"][0]["type"] == "protected_path"
    assert run["decisions"][0]["decision"] == "reject"
    assert "decision" in run
    assert "hello from the agent" in run["log_tail"]

    assert prometheus.status_code == 200
    assert prometheus.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(prometheus.text)}
    tasks = {s.labels["state"]: s.value for s in families["capataz_tasks"].samples}
    assert tasks["blocked"] == 1.0
    assert families["capataz_runners_online"].samples[0].value == 1.0
    decisions = {s.labels["decision"]: s.value for s in families["capataz_decisions"].samples}
    assert decisions == {"reject": 1.0}
    durations = {s.name: s.value for s in families["capataz_recent_run_duration_seconds"].samples}
    assert durations["capataz_recent_run_duration_seconds_count"] == 1.0
    assert durations["capataz_recent_run_duration_seconds_sum"] == 3.5


def test_an_escalation_is_answered_over_the_api(server: Server) -> None:
    store = server.store()
    try:
        task = store.tasks.add("asks", "true")
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=1)
        claimed = store.leases.claim(runner)
        assert claimed is not None
        assert store.escalations.open(task.id, claimed.fencing_token, "medium: touches docs")
        with server.client("operator") as client:
            invalid = client.post(
                f"/ops/escalations/{task.id}/decision", json={"decision": "maybe"}
            )
            answered = client.post(
                f"/ops/escalations/{task.id}/decision",
                json={"decision": "approve", "note": "fine"},
            )
            again = client.post(f"/ops/escalations/{task.id}/decision", json={"decision": "abort"})
        answer = store.escalations.poll(task.id, claimed.fencing_token)
    finally:
        store.close()
    assert invalid.status_code == 422
    assert invalid.json()["error"]["message"].startswith("body.decision:")
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"]["task"]["status"] == "running"
    assert again.status_code == 409
    assert answer is not None
    assert (answer.decision, answer.note, answer.decided_by) == (
        "approve",
        "fine",
        "api:test-operator",
    )
