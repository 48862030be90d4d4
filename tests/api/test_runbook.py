"""The runbook's cheatsheet commands, run as written with real curl and jq, only the
base URL and a bearer token added."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from tests.api.conftest import Server


def _sh(server: Server, script: str) -> str:
    env = {**server.env, "API_BASE_URL": server.base, "T": server.tokens["operator"]}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cheatsheet_commands_work_with_curl_and_jq(server: Server) -> None:
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:  # like PostgreSQL: skipped on a laptop, a failure in CI
        message = f"needs {' and '.join(missing)} (apt-get install -y curl jq)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    store = server.store()
    try:
        task = store.add_task("waits", "true")
        store.cancel(task.id)
        store.add_task("ready one", "true")
        runner = store.register_runner("daemon", hostname="h", pid=1, concurrency=1)
    finally:
        store.close()
    auth = '-H "Authorization: Bearer $T"'
    assert _sh(server, 'curl -s "$API_BASE_URL/health" && echo " ✓ API healthy"').endswith(
        "✓ API healthy"
    )
    assert _sh(server, f'curl -s "$API_BASE_URL/ops/metrics" {auth} | jq .data.tasks.ready') == "1"
    assert (
        _sh(server, f'curl -s "$API_BASE_URL/ops/tasks?status=ready" {auth} | jq ".data | length"')
        == "1"
    )
    online = _sh(
        server,
        f'curl -s "$API_BASE_URL/ops/runner/status" {auth}'
        " | jq -c '.data[] | select(.status==\"online\")'",
    )
    assert f'"id":"{runner}"' in online
    # The runbook posts JSON without a Content-Type (curl's default is form encoding).
    requeued = _sh(
        server,
        f'curl -s -X POST "$API_BASE_URL/ops/tasks/{task.id}/requeue" {auth}'
        """ -d '{"backoff_seconds":10}' | jq -r .data.status""",
    )
    assert requeued == "ready"
    last = _sh(server, f"curl -s \"$API_BASE_URL/runs\" {auth} | jq -c '.data[0]'")
    assert last == "null"
