"""The runbook's cheatsheet commands, run as written with real curl and jq, only the
base URL and a bearer token added (docs/runbook.md maps every one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from tests.api.conftest import Server

from capataz.store import Store


def runbook_shell(server: Server, script: str, timeout: float = 30) -> str:
    """Run the runbook's ``curl | jq`` lines as written, against ``server``. scripts/check
    installs both tools, so in CI their absence fails instead of skipping."""
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        why = f"needs {' and '.join(missing)} (apt-get install -y curl jq)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    env = {**server.env, "API_BASE_URL": server.base, "T": server.tokens["operator"]}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cheatsheet_commands_work_with_curl_and_jq(server: Server) -> None:
    store = server.store()
    try:
        task = store.tasks.add("waits", "true")
        store.tasks.cancel(task.id)
        store.tasks.add("ready one", "true")
        runner = store.runners.register("daemon", hostname="h", pid=1, concurrency=1)
    finally:
        store.close()
    auth = '-H "Authorization: Bearer $T"'
    assert runbook_shell(
        server, 'curl -s "$API_BASE_URL/health" && echo " ✓ API healthy"'
    ).endswith("✓ API healthy")
    assert (
        runbook_shell(server, f'curl -s "$API_BASE_URL/ops/metrics" {auth} | jq .data.tasks.ready')
        == "1"
    )
    assert (
        runbook_shell(
            server, f'curl -s "$API_BASE_URL/ops/tasks?status=ready" {auth} | jq ".data | length"'
        )
        == "1"
    )
    online = runbook_shell(
        server,
        f'curl -s "$API_BASE_URL/ops/runner/status" {auth}'
        " | jq -c '.data[] | select(.status==\"online\")'",
    )
    assert f'"id":"{runner}"' in online
    # The runbook posts JSON without a Content-Type (curl's default is form encoding).
    requeued = runbook_shell(
        server,
        f'curl -s -X POST "$API_BASE_URL/ops/tasks/{task.id}/requeue" {auth}'
        """ -d '{"backoff_seconds":10}' | jq -r .data.status""",
    )
    assert requeued == "ready"
    last = runbook_shell(server, f"curl -s \"$API_BASE_URL/runs\" {auth} | jq -c '.data[0]'")
    assert last == "null"


def test_troubleshooting_a_high_fail_rate_with_curl_and_jq(server: Server) -> None:
    """The runbook's "fail_rate alto" recipe: failed runs by their status, the failed
    run's steps, and the tasks with a last_error, all as written."""
    # A failed attempt is retried at once (no backoff), so the test need not wait.
    store = Store.open(server.url, retry_base_seconds=0.001, retry_cap_seconds=0.001)
    try:
        store.tasks.add("blocked", "false", id="blocked", priority=3)
        store.tasks.add("fine", "true", id="fine", priority=2)
        store.tasks.add("flaky", "false", id="flaky", priority=1, max_attempts=2)
        runner = store.runners.register("daemon", hostname="h", pid=1, concurrency=1)
        ended = {}
        for task_id, outcome in (("blocked", "blocked"), ("fine", "done"), ("flaky", "failed")):
            claimed = store.leases.claim(runner, 60)
            assert claimed is not None and claimed.id == task_id
            store.runs.step_started(claimed.run_id, "execute")
            store.runs.step_finished(
                claimed.run_id, "execute", "ok" if outcome == "done" else "error"
            )
            store.leases.complete(
                claimed.id, claimed.fencing_token, outcome, f"{claimed.id}: {outcome}"
            )
            ended[claimed.id] = claimed.run_id
        time.sleep(0.01)
        retry = store.leases.claim(runner, 60)  # flaky's second attempt, still running
        assert retry is not None and retry.id == "flaky"
    finally:
        store.close()
    auth = '-H "Authorization: Bearer $T"'
    failed = runbook_shell(
        server,
        f'curl -s "$API_BASE_URL/runs" {auth}'
        """ | jq -c '.data[] | select(.status=="failed") | {task_id, status, lifecycle, outcome}'""",
    ).splitlines()
    assert sorted(failed) == sorted(
        [
            '{"task_id":"flaky","status":"failed","lifecycle":"finished","outcome":"failed"}',
            '{"task_id":"blocked","status":"failed","lifecycle":"finished","outcome":"blocked"}',
        ]
    )
    # The same filter in SQL, with the total in the header.
    in_sql = runbook_shell(
        server,
        f'curl -s -D /dev/stderr "$API_BASE_URL/runs?status=failed" {auth}'
        " | jq -r '[.data[].task_id] | sort | join(\",\")'",
    )
    assert in_sql == "blocked,flaky"
    statuses = runbook_shell(
        server,
        f'curl -s "$API_BASE_URL/runs" {auth}'
        " | jq -r '.data[:5] | .[] | {id,task_id,status,started_at} | .status' | sort | uniq -c",
    )
    assert [line.split() for line in statuses.splitlines()] == [
        ["2", "failed"],
        ["1", "running"],
        ["1", "succeeded"],
    ]
    steps = runbook_shell(
        server,
        f'curl -s "$API_BASE_URL/runs/{ended["blocked"]}" {auth} | jq -c "[.data.steps[].phase]"',
    )
    assert steps == '["execute"]'
    with_errors = runbook_shell(
        server,
        f'curl -s "$API_BASE_URL/ops/tasks" {auth}'
        " | jq -c '.data[] | select(.last_error != null) | {id, status, last_error}'",
    ).splitlines()
    assert sorted(with_errors) == [
        '{"id":"blocked","status":"blocked","last_error":"blocked: blocked"}',
        '{"id":"flaky","status":"running","last_error":"flaky: failed"}',
    ]
    refused = runbook_shell(
        server, f'curl -s "$API_BASE_URL/runs?status=bogus" {auth} | jq -r .error.code'
    )
    assert refused == "invalid"
