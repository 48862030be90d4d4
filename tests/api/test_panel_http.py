"""The panel over plain HTTP: the page and its assets need no token and carry the right
types and headers, and the API additions the panel reads (the escalation list, what
each runner works on) on both databases."""

from __future__ import annotations

from tests.api.conftest import Server

from capataz.api.routes.panel import ASSETS


def test_the_page_is_served_without_a_token(server: Server) -> None:
    with server.client() as client:
        page = client.get("/")
        document = client.get("/openapi.json").json()
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/panel/panel.js">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert not any(path == "/" or path.startswith("/panel") for path in document["paths"])


def test_assets_have_their_content_types(server: Server) -> None:
    expected = {
        "panel.css": "text/css; charset=utf-8",
        "panel.js": "text/javascript; charset=utf-8",
        "api.js": "text/javascript; charset=utf-8",
        "views/runs.js": "text/javascript; charset=utf-8",
    }
    assert set(expected) <= set(ASSETS)
    with server.client() as client:
        for name, kind in expected.items():
            response = client.get(f"/panel/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == kind
        for name in ASSETS:  # every shipped file is served, and stays small
            body = client.get(f"/panel/{name}").text
            assert body and body.count("\n") < 600, name
        missing = client.get("/panel/nope.js")
        outside = client.get("/panel/../api/app.py")
        dotted = client.get("/panel/%2e%2e/app.py")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no panel file nope.js"
    assert outside.status_code == 404 and "ok" in outside.json()
    assert dotted.status_code == 404 and "ok" in dotted.json()


def test_no_module_uses_inner_html() -> None:
    for name, path in ASSETS.items():
        if name.endswith(".js"):
            text = path.read_text()
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
            assert "document.write" not in text and "eval(" not in text, name


def test_escalations_are_listed_for_viewers(server: Server) -> None:
    store = server.store()
    try:
        quiet = store.tasks.add("quiet", "true")
        asks = store.tasks.add("asks a human", "true")
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=2)
        first = store.leases.claim(runner)
        second = store.leases.claim(runner)
        assert first is not None and second is not None
        claimed = {first.id: first, second.id: second}
        assert store.escalations.open(asks.id, claimed[asks.id].fencing_token, "medium: 4 files")
        with server.client("viewer") as viewer:
            listed = viewer.get("/ops/escalations")
            runners = viewer.get("/ops/runner/status").json()["data"]
        with server.client() as anonymous:
            refused = anonymous.get("/ops/escalations")
        with server.client("runner") as wrong_role:
            forbidden = wrong_role.get("/ops/escalations")
        store.escalations.answer(asks.id, "approve", note="fine", decided_by="ops")
        with server.client("viewer") as viewer:
            still_open = viewer.get("/ops/escalations", params={"open": "true"}).json()["data"]
            every = viewer.get("/ops/escalations", params={"open": "false"}).json()["data"]
            invalid = viewer.get("/ops/escalations", params={"limit": 0})
    finally:
        store.close()

    assert listed.status_code == 200, listed.text
    [escalation] = listed.json()["data"]
    assert escalation["task_id"] == asks.id
    assert escalation["run_id"] == claimed[asks.id].run_id
    assert escalation["reason"] == "medium: 4 files"
    assert escalation["task_title"] == "asks a human"
    assert escalation["task_status"] == "escalated"
    assert escalation["opened_at"].endswith(("Z", "+00:00"))
    for key in ("decision", "decided_by", "note", "answered_at", "closed_at", "details"):
        assert key in escalation and escalation[key] is None, key
    assert refused.status_code == 401
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["message"] == (
        "role runner cannot GET /ops/escalations; needs viewer"
    )
    assert still_open == []
    [answered] = every
    assert (answered["decision"], answered["decided_by"], answered["note"]) == (
        "approve",
        "ops",
        "fine",
    )
    assert answered["closed_at"] is not None
    assert invalid.status_code == 422

    [status] = runners
    assert status["current_tasks"] == sorted([quiet.id, asks.id])
    by_task = {c["task_id"]: c for c in status["current_runs"]}
    assert by_task[asks.id]["run_id"] == claimed[asks.id].run_id
    assert by_task[asks.id]["task_status"] == "escalated"
    assert by_task[quiet.id]["run_id"] == claimed[quiet.id].run_id
    assert by_task[quiet.id]["task_title"] == "quiet"


def test_an_idle_runner_works_on_nothing(server: Server) -> None:
    store = server.store()
    try:
        store.runners.register("idle", hostname="h", pid=2, concurrency=1)
    finally:
        store.close()
    with server.client("viewer") as client:
        [runner] = client.get("/ops/runner/status").json()["data"]
    assert runner["current_runs"] == [] and runner["status"] == "online"
