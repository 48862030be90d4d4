"""The web panel in a real browser (Debian's chromium driven by Playwright) against a
real ``capataz serve`` and, where a run is needed, a real runner process beside it.

SQLite only: the API under the panel is tested on both databases elsewhere. A
screenshot of every step lands in test-artifacts/panel/ at the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import ROLES, Server
from tests.conftest import GIT_ENV, git
from tests.helpers import wait_for
from tests.serving import serving

from capataz.store import RunDetails, Store

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser fixture says why the tests cannot run
    expect = sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "panel"
CONFIG = """
[server]
rate_burst = 10000
rate_limit = 10000

[project]
escalation_timeout = "60s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"
idle_timeout = "20s"

[runner]
lease = "5s"
heartbeat = "1s"
sweep_interval = "0.5s"
poll_interval = "0.2s"
grace = "5s"

[policy]
max_changed_files = 3

[[requests]]
id = "REQ-009"
secret = "PLANNER_API_KEY"
description = "the planner's key"
"""
SLOW_LINES = "for i in 1 2 3 4 5 6 7 8; do echo line-$i; echo line-$i >> out.txt; sleep 0.4; done"

pytestmark = [pytest.mark.xdist_group("panel"), pytest.mark.slow]


def no_chromium(why: str) -> None:
    """Skip, except in CI: there a panel that silently went untested would be a lie."""
    if os.environ.get("CI"):
        pytest.fail(f"the panel's browser tests cannot run in CI: {why}")
    pytest.skip(f"no browser for the panel tests: {why}")


@pytest.fixture(scope="module")
def panel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``capataz serve`` over SQLite for the whole module (starting one per test
    would double the file's time); every test works on its own tasks."""
    root = tmp_path_factory.mktemp("panel")
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    for name, text in (
        ("README.md", "# project\n"),
        (".gitignore", ".capataz/\n"),
        ("capataz.toml", CONFIG),
    ):
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "initial")
    url = f"sqlite:///{root / 'queue.db'}"
    identity = {key: value for key, value in GIT_ENV.items() if key != "PATH"}
    env = {**os.environ, **identity, "CAPATAZ_DATABASE_URL": url}
    store = Store.open(url)
    try:
        tokens = {role: store.tokens.create(role, f"test-{role}") for role in ROLES}
    finally:
        store.close()
    with serving(repo, env) as base:
        yield Server(base=base, repo=repo, env=env, url=url, tokens=tokens)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        no_chromium(f"{CHROMIUM} is missing (apt-get install chromium)")
    if sync_playwright is None:
        no_chromium("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, panel_server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (its own sessionStorage) per test; any script error on
    the page fails the test."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.set_default_timeout(90_000)  # a ceiling for a loaded machine
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.shots = 0
    opened.test_name = request.node.name
    opened.on("console", lambda message: print(f"console {message.type}: {message.text}"))
    yield opened
    shot(opened, "last")  # how the page looked when the test ended, passed or not
    context.close()
    assert errors == []


@pytest.fixture
def runners(panel_server: Server) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "capataz", "runner", "run", "--exit-when-idle"],
            cwd=panel_server.repo,
            env=panel_server.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


def shot(page: Any, step: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.shots += 1
    name = re.sub(r"[^\w.-]+", "_", f"{page.test_name}-{page.shots:02}-{step}")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: Server, role: str) -> None:
    page.goto(server.base + "/")
    page.fill("#token-input", server.tokens[role])
    page.click("#signin-button")
    page.wait_for_selector("#app:not([hidden])")


def api(server: Server, role: str, method: str, path: str, **options: Any) -> Any:
    with server.client(role) as client:
        response = client.request(method, path, **options)
    assert response.status_code < 300, response.text
    return response.json()["data"]


def test_sign_in_refuses_a_bad_token_and_signs_out(page: Any, panel_server: Server) -> None:
    server = panel_server
    page.goto(server.base + "/")
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#token-input", "cap_not-a-token")
    page.click("#signin-button")
    error = page.locator("#signin-error")
    error.wait_for()
    assert error.inner_text() == "Sign-in failed: 401 unauthorized: invalid token"
    assert page.locator("#app").is_hidden()
    shot(page, "bad-token")

    page.fill("#token-input", server.tokens["runner"])  # valid, but may not read
    page.click("#signin-button")
    expect(error).to_contain_text("403 forbidden: role runner cannot GET /ops/metrics")
    assert "needs viewer" in error.inner_text()

    sign_in(page, server, "viewer")
    assert page.url.endswith("#/runs")
    nav = page.locator(".sidebar a").all_inner_texts()
    assert nav == [
        "Runs",
        "Tasks",
        "Runners",
        "Escalations",
        "Directives",
        "Requests",
        "Setup",
    ]
    page.locator("[data-view=runs] table, [data-view=runs] .empty").wait_for()
    shot(page, "signed-in")

    # Sections over endpoints capataz may not serve yet: an honest empty state on 404,
    # the data once the endpoint exists.
    for section, path, missing in (
        ("directives", "/ops/directives", "this server has no planner directives"),
        ("requests", "/ops/requests", "capataz has no credential requests yet"),
    ):
        page.click(f".sidebar a[data-section={section}]")
        view = page.locator(f"[data-view={section}]")
        with server.client("viewer") as client:
            served = client.get(path).status_code != 404
        if served:
            view.locator("table, .empty").first.wait_for()
            assert missing not in view.inner_text()
        else:
            view.locator("[data-empty]").wait_for()
            assert missing in view.inner_text()
        shot(page, section)
    if served:
        assert page.locator("[data-request=REQ-009]").inner_text().split("\t")[2] == "WAITING"
    assert page.locator("#banner").is_hidden()

    page.reload()  # the token survives a reload of the tab
    page.wait_for_selector("#app:not([hidden])")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
    shot(page, "signed-out")


def test_setup_provides_a_requested_credential(page: Any, panel_server: Server) -> None:
    server = panel_server
    with server.client("viewer") as client:
        assert client.get("/ops/requests").status_code == 200  # the Setup flow needs it
    sign_in(page, server, "operator")
    page.click(".sidebar a[data-section=setup]")
    form = page.locator("form[data-setup=REQ-009]")
    form.locator("input[name=value]").fill("s3cret-value")
    shot(page, "waiting")
    form.locator("button[type=submit]").click()
    page.locator("#banner.notice").wait_for()
    assert page.locator("#banner-text").inner_text() == "PLANNER_API_KEY saved."
    page.locator("[data-view=setup] [data-empty]").wait_for()
    assert "s3cret-value" not in page.content()
    with server.client("viewer") as client:
        [request] = client.get("/ops/requests").json()["data"]
    assert request["status"] == "PROVIDED"
    shot(page, "provided")


def test_the_event_parser_handles_split_frames(page: Any, panel_server: Server) -> None:
    server = panel_server
    page.goto(server.base + "/")
    frames = page.evaluate(
        """async () => {
            const { SseParser } = await import('/panel/api.js');
            const seen = [];
            const parser = new SseParser((frame) => seen.push(frame));
            for (const chunk of ['retry: 2000\\n: hello\\n\\nid: 4', '1\\nevent: run.log\\r\\n',
                                 'data: {"a":\\n', 'data: 1}\\n', '\\n: keep-alive\\n\\n']) {
                parser.push(chunk);
            }
            return seen;
        }"""
    )
    assert frames == [{"id": "41", "event": "run.log", "data": '{"a":\n1}'}]


def test_a_run_streams_its_log_live(
    page: Any, panel_server: Server, runners: Callable[[], subprocess.Popen[str]]
) -> None:
    server = panel_server
    sign_in(page, server, "viewer")
    task = api(
        server, "operator", "POST", "/ops/tasks", json={"title": "slow", "instruction": SLOW_LINES}
    )
    runner = runners()

    def running_run() -> str | None:
        found = api(server, "viewer", "GET", "/runs", params={"task_id": task["id"]})
        return found[0]["id"] if found else None

    run_id = wait_for(running_run, "the runner starts the run")
    page.goto(f"{server.base}/#/runs/{run_id}")
    log = page.locator("[data-pane=log]")
    status = page.locator("[data-field=run-status] .badge")
    status.wait_for()
    assert "line-8" not in log.inner_text()
    expect(log).to_contain_text("line-3")
    run = api(server, "viewer", "GET", f"/runs/{run_id}")
    assert run["status"] == "running" and run["ended_at"] is None, "the run ended too soon"
    assert status.inner_text() == "running"
    assert page.locator("#live-status").inner_text() == "live"
    shot(page, "streaming")

    expect(status).to_have_text("succeeded", timeout=40_000)
    expect(log).to_contain_text("line-8")
    text = log.inner_text()
    assert text.index("line-1") < text.index("line-3") < text.index("line-8")
    assert page.locator("[data-step=execute]").count() >= 1
    assert "out.txt" in page.locator("table").all_inner_texts().__str__()
    finished = api(server, "viewer", "GET", f"/runs/{run_id}")
    if finished.get("diff"):
        assert page.locator("[data-pane=diff] .add", has_text="+line-8").count() == 1
    shot(page, "finished")

    page.click(".sidebar a[data-section=runs]")
    page.locator(f"[data-run='{run_id}']").wait_for()
    shot(page, "runs-list")
    runner.communicate(timeout=30)
    assert runner.returncode == 0


def test_an_escalation_is_approved_in_the_panel(
    page: Any, panel_server: Server, runners: Callable[[], subprocess.Popen[str]]
) -> None:
    server = panel_server
    task = api(
        server,
        "operator",
        "POST",
        "/ops/tasks",
        json={"title": "too big", "instruction": "touch a b c d"},
    )
    runner = runners()
    sign_in(page, server, "operator")
    page.click(".sidebar a[data-section=escalations]")
    card = page.locator(f"[data-escalation='{task['id']}']")
    card.wait_for(timeout=30_000)
    assert card.locator("[data-field=reason]").inner_text().strip()
    assert "escalated" in card.inner_text()
    shot(page, "open")

    card.locator("textarea[name=note]").fill("four files is fine")
    card.locator("button[data-decision=approve]").click()
    page.locator("#banner.notice").wait_for()
    assert "answered: approve" in page.locator("#banner").inner_text()
    wait_for(
        lambda: api(server, "viewer", "GET", f"/ops/tasks/{task['id']}")["status"] == "done",
        what="the approved task lands",
    )
    page.locator("[data-view=escalations] [data-empty]").wait_for()
    shot(page, "answered")

    page.check("#show-answered")
    answered = page.locator(f"[data-escalation='{task['id']}']")
    answered.wait_for()
    assert "four files is fine" in answered.inner_text()
    page.click(".sidebar a[data-section=tasks]")
    page.locator(f"[data-task='{task['id']}'][data-status=done]").wait_for()
    shot(page, "task-done")
    runner.communicate(timeout=30)


def test_tasks_are_queued_cancelled_and_requeued(page: Any, panel_server: Server) -> None:
    server = panel_server
    # No runner: tasks stay where the panel puts them.
    first = api(
        server, "operator", "POST", "/ops/tasks", json={"title": "first", "instruction": "true"}
    )
    api(server, "operator", "POST", f"/ops/tasks/{first['id']}/cancel", json={})

    sign_in(page, server, "viewer")  # a viewer's requeue is refused with the API's words
    page.click(".sidebar a[data-section=tasks]")
    row = page.locator(f"[data-task='{first['id']}']")
    row.locator("button[data-action=requeue]").click()
    banner = page.locator("#banner:not(.notice)")
    banner.wait_for()
    assert banner.inner_text().startswith(
        "403 forbidden: role viewer cannot POST /ops/tasks/{task_id}/requeue; needs operator"
    )
    shot(page, "viewer-refused")
    page.click("#signout")

    sign_in(page, server, "operator")
    page.click(".sidebar a[data-section=tasks]")
    page.click("text=New task")
    page.fill("#new-title", "second")
    page.fill("#new-instruction", "echo second")
    page.fill("#new-depends", first["id"])
    page.fill("#new-priority", "5")
    page.click("form[data-form=new-task] button[type=submit]")
    page.locator("#banner.notice").wait_for()
    second_id = re.search(r"Task (\S+) queued", page.locator("#banner").inner_text())[1]  # type: ignore[index]
    second = api(server, "viewer", "GET", f"/ops/tasks/{second_id}")
    assert (second["title"], second["priority"], second["depends_on"]) == (
        "second",
        5,
        [first["id"]],
    )
    # its dependency is cancelled, so it is blocked (or still pending)
    shot(page, "queued")

    page.select_option("select[name=status]", "cancelled")
    row = page.locator(f"[data-task='{first['id']}']")
    row.wait_for()
    page.fill("#requeue-backoff", "0")
    row.locator("button[data-action=requeue]").click()
    page.locator("#banner.notice").wait_for()
    assert wait_for(
        lambda: api(server, "viewer", "GET", f"/ops/tasks/{first['id']}")["status"] == "ready",
        what="the requeued task is ready",
    )
    row.wait_for(state="detached")  # it left the cancelled filter
    shot(page, "requeued")

    page.select_option("select[name=status]", "ready")
    ready = page.locator(f"[data-task='{first['id']}'][data-status=ready]")
    ready.wait_for()
    cancel = ready.locator("button[data-action=cancel]")
    cancel.click()
    assert cancel.inner_text() == "Confirm cancel?"
    cancel.click()
    wait_for(
        lambda: api(server, "viewer", "GET", f"/ops/tasks/{first['id']}")["status"] == "cancelled",
        what="the task is cancelled",
    )

    page.select_option("select[name=status]", "")
    page.click("text=Dependencies")
    tree = page.locator(f"[data-tree-task='{first['id']}']")
    tree.wait_for()
    assert tree.locator(f"[data-tree-task='{second_id}']").count() == 1
    shot(page, "dependencies")


def test_directives_are_applied_and_rejected_in_the_panel(page: Any, panel_server: Server) -> None:
    from capataz.store import ProposedTask

    server = panel_server
    proposed = (
        ProposedTask("build", "Panel build", "true"),
        ProposedTask("check", "Panel check", "true", depends_on=("build",)),
    )
    store = server.store()
    try:
        kept, _ = store.directives.add("Build and check", "the panel test", proposed, model="m")
        refused, _ = store.directives.add("Not this one", "r", proposed[:1], model="m")
    finally:
        store.close()
    sign_in(page, server, "operator")
    page.click(".sidebar a[data-section=directives]")
    card = page.locator(f"[data-directive={kept.id}]")
    card.wait_for()
    assert "the panel test" in card.inner_text()
    assert card.locator("[data-proposed=check]").inner_text().split("\t")[-1] == "build"
    shot(page, "pending")
    card.locator("button[data-action=apply]").click()
    page.locator("#banner.notice").wait_for()
    assert page.locator("#banner-text").inner_text() == (
        f"Directive {kept.id} applied: 2 task(s) queued."
    )
    expect(page.locator(f"[data-directive={kept.id}] .badge")).to_have_text("APPLIED")
    assert page.locator(f"[data-directive={kept.id}] button").count() == 0

    other = page.locator(f"[data-directive={refused.id}]")
    other.locator("input[name=reason]").fill("out of scope")
    other.locator("button[data-action=reject]").click()
    other.locator("button[data-action=reject]").click()  # confirm
    expect(page.locator(f"[data-directive={refused.id}] .badge")).to_have_text("REJECTED")
    expect(page.locator(f"[data-directive={refused.id}] [data-reason]")).to_have_text(
        "Reason: out of scope"
    )
    shot(page, "decided")
    titles = {task["title"] for task in api(server, "viewer", "GET", "/ops/tasks")}
    assert {"Panel build", "Panel check"} <= titles


def test_a_refused_data_call_shows_in_the_banner(page: Any, panel_server: Server) -> None:
    server = panel_server
    sign_in(page, server, "viewer")
    page.evaluate("sessionStorage.setItem('capataz.token', 'cap_revoked')")  # as if revoked
    page.click(".sidebar a[data-section=runners]")
    banner = page.locator("#banner")
    banner.wait_for()
    assert banner.inner_text().startswith("401 unauthorized: invalid token")
    shot(page, "invalid-token")


def test_a_runs_page_shows_what_its_agent_used(page: Any, panel_server: Server) -> None:
    server = panel_server
    store = Store.open(server.url)
    try:
        task = store.tasks.add("costly", "true")
        claimed = store.leases.claim_task(task.id, "runner-1")  # other tests share the queue
        assert claimed is not None and claimed.id == task.id
        details = RunDetails(
            outcome="landed",
            tokens_in=12_345,
            tokens_out=678,
            cost_usd=0.0421,
            model="claude-sonnet-4-5",
            turns=3,
        )
        assert store.leases.complete(task.id, claimed.fencing_token, "done", details=details)
    finally:
        store.close()
    sign_in(page, server, "viewer")
    page.goto(f"{server.base}/#/runs/{claimed.run_id}")
    usage = page.locator("[data-field=usage]")
    expect(usage).to_have_text(
        "12,345 tokens in, 678 out, $0.0421, model claude-sonnet-4-5, 3 turns"
    )
    shot(page, "usage")
