"""The redaction promise, end to end: an agent that holds a secret prints it every way
it can (plainly, split across output chunks, on stderr, base64, URL-encoded, hex) and
tries to commit it; a real runner process runs it and a real server reports it.
Afterwards the value is nowhere: not in any file under .capataz/ (database, WAL,
progress files, run logs), not in any API answer, not in the event stream — only
``***LEAK_KEY***`` where it was printed. And the commit that held it never landed."""

from __future__ import annotations

import base64
import binascii
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
from cryptography.fernet import Fernet
from tests.conftest import git
from tests.serving import start_serve

SECRET = "sk-proj-Zq81vN4rTt2LmX7cB0pW5yKd"
CONFIG = """
[agents.leaky]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"
secrets = ["LEAK_KEY"]

[[requests]]
id = "REQ-001"
secret = "LEAK_KEY"
description = "a key the agent must never leak"
agents = ["leaky"]

[runner]
poll_interval = "0.2s"
"""
SCRIPT = r"""
echo "plain: $LEAK_KEY"
printf 'split: %s' "${LEAK_KEY:0:11}"; sleep 0.3; printf '%s\n' "${LEAK_KEY:11}"
echo "stderr: $LEAK_KEY" >&2
printf '%s' "$LEAK_KEY" | base64 -w0; echo
echo "$LEAK_KEY" | base64
printf 'user:%s' "$LEAK_KEY" | base64 -w0; echo
python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["LEAK_KEY"], safe=""))'
printf '%s' "$LEAK_KEY" | od -An -tx1 | tr -d ' \n'; echo
echo "config: $LEAK_KEY" > settings.txt
"""


def _forms() -> list[bytes]:
    raw = SECRET.encode()
    forms = [
        raw,
        base64.b64encode(raw),
        base64.b64encode(raw + b"\n"),
        quote(SECRET, safe="").encode(),
        quote_plus(SECRET).encode(),
        binascii.hexlify(raw),
    ]
    return [*forms, base64.b64encode(b"user:" + raw)]


def _leaks(blob: bytes) -> list[bytes]:
    return [form for form in _forms() if form in blob]


def test_a_planted_secret_appears_nowhere(make_repo: Callable[..., Path]) -> None:
    root = make_repo(config=CONFIG)
    env = {**os.environ, "CAPATAZ_MASTER_KEY": Fernet.generate_key().decode()}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=root,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    stored = cli("secret", "set", "LEAK_KEY", stdin=SECRET + "\n")
    assert stored.returncode == 0, stored.stderr
    added = cli("task", "add", SCRIPT, "--agent", "leaky", "--id", "leak", "--max-attempts", "1")
    assert added.returncode == 0, added.stderr
    before = git(root, "rev-parse", "main")
    ran = cli("runner", "run", "--exit-when-idle")
    assert ran.returncode == 0, ran.stderr
    assert _leaks((ran.stdout + ran.stderr).encode()) == []

    # The commit that held the value was blocked, not landed.
    shown = cli("task", "show", "leak", "--json")
    assert '"blocked"' in shown.stdout, shown.stdout
    assert git(root, "rev-parse", "main") == before

    # Every byte capataz keeps: database (and its WAL), progress files, run logs.
    kept = [p for p in (root / ".capataz").rglob("*") if p.is_file()]
    assert any(p.name == "run.log" for p in kept)
    found = {str(p.relative_to(root)): _leaks(p.read_bytes()) for p in kept}
    assert {path: hits for path, hits in found.items() if hits} == {}
    run_log = next(p for p in kept if p.name == "run.log").read_text()
    assert "plain: ***LEAK_KEY***" in run_log
    assert "split: ***LEAK_KEY***" in run_log
    assert "stderr: ***LEAK_KEY***" in run_log

    # What the control plane answers: runs, the run, tasks, escalations, events.
    server, base = start_serve(root, env, keep_stdout=True)  # its output is checked too
    try:
        token = cli("token", "create", "--role", "admin").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as api:
            runs = api.get("/runs").json()["data"]
            answers = [api.get("/runs").content, api.get("/ops/tasks").content]
            answers += [api.get(f"/runs/{run['id']}").content for run in runs]
            answers.append(api.get("/ops/escalations?open=false").content)
            answers.append(api.get("/ops/requests").content)
            with api.stream("GET", "/events?after=0") as stream:
                events = b""
                for chunk in stream.iter_bytes():
                    events += chunk
                    if b"run.finished" in events:
                        break
            answers.append(events)
        assert all(_leaks(answer) == [] for answer in answers)
        detail = answers[2].decode()  # the run: its log tail, violations, diff
        assert "***LEAK_KEY***" in detail
        assert "SECRET_LEAK" in detail
        assert b"***LEAK_KEY***" in events
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert _leaks((out + err).encode()) == []
