"""Acceptance: `capataz doctor --agent NAME` says, before any task runs, whether that
agent will start in the sandbox, reach its endpoint and get its credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.agents.harness import TOOLS, agent_tools

KEY = "sk-ant-doctor-0123456789abcdef"


def capataz(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def doctor(repo: Path, agent: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code and the checks by name, from ``--json``."""
    done = capataz("doctor", "--agent", agent, "--json", cwd=repo)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}


class _Answer404(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def model_api() -> Iterator[int]:
    """A tiny HTTP server on the host's loopback (any answer means reachable): its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer404)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_unknown_agent_is_one_line_naming_the_known_ones(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo(config='[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n')
    done = capataz("doctor", "--agent", "claude", cwd=repo)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "unknown agent 'claude'; known agents: shell" in lines[0]


def test_a_working_agent_passes_every_check(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(config='[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n')
    done = capataz("doctor", "--agent", "shell", cwd=repo)
    assert done.returncode == 0, done.stdout
    assert "✓ command: bash: /usr/bin/bash" in done.stdout
    assert "✓ version: GNU bash, version" in done.stdout
    assert "✗" not in done.stdout and "agent shell: all 2 checks pass" in done.stdout


def test_a_script_under_a_masked_directory_names_the_mask_and_the_expose_fix(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"  # under /tmp, which the sandbox masks
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    tool = venv / "bin" / "tool"
    tool.write_text(f"#!{venv}/bin/python\nprint('tool 1.2.3')\n")
    tool.chmod(0o755)
    agent = f'[agents.tool]\ncommand = ["{tool}", "{{instruction}}"]\n'
    repo = make_repo(config=agent)
    done = capataz("doctor", "--agent", "tool", cwd=repo)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    command = lines.index(
        f"✗ command: {tool} is under /tmp, which the sandbox masks (an empty directory inside)"
    )
    fix = f'    fix: show it read-only to agents: [sandbox] expose = ["{venv}"] in capataz.toml'
    assert lines[command + 1] == fix
    assert any(line.startswith("✗ version: exit code 127: ") for line in lines)

    (repo / "capataz.toml").write_text(f'{agent}\n[sandbox]\nexpose = ["{venv}"]\n')
    code, checks = doctor(repo, "tool")  # the fix, as written, is enough
    assert code == 0, checks
    assert checks["interpreter"]["detail"].startswith(f"{venv}/bin/python → /usr/bin/python3")
    assert checks["version"]["detail"] == "tool 1.2.3"


def test_the_endpoint_is_reached_only_through_the_agents_network(
    make_repo: Callable[..., Path], model_api: int
) -> None:
    address = f"127.0.0.1:{model_api}"

    def config(network: str) -> str:
        return (
            '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n'
            f'endpoint = "http://{address}"\nnetwork = {network}\n'
        )

    repo = make_repo(config=config(f'["{address}"]'))
    code, checks = doctor(repo, "shell")
    assert code == 0, checks
    assert (
        checks["endpoint"]["detail"]
        == f"{address} reachable through the proxy; HTTP/1.0 404 Not Found"
    )

    (repo / "capataz.toml").write_text(config('["127.0.0.1:1"]'))
    code, checks = doctor(repo, "shell")
    assert code == 1 and not checks["endpoint"]["ok"]
    assert f"denied {address}" in checks["endpoint"]["detail"]
    assert checks["endpoint"]["fix"] == f'add "{address}" to [agents.shell] network'

    (repo / "capataz.toml").write_text(config("false"))
    code, checks = doctor(repo, "shell")
    assert code == 1
    assert "the agent has no network (network = false)" in checks["endpoint"]["detail"]
    assert (
        checks["endpoint"]["fix"]
        == f'allow it: [agents.shell] network = ["{address}"] in capataz.toml'
    )


def test_a_waiting_credential_is_a_problem_until_it_is_set(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    assert capataz("init", "--agent", "claude-code", cwd=repo).returncode == 0
    done = capataz("doctor", "--agent", "claude-code", cwd=repo)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    at = lines.index(
        "✗ credential ANTHROPIC_API_KEY: WAITING: not in the vault (request REQ-ANTHROPIC_API_KEY)"
    )
    assert lines[at + 1] == "    fix: store it: capataz secret set ANTHROPIC_API_KEY"

    stored = capataz("secret", "set", "ANTHROPIC_API_KEY", cwd=repo, stdin=f"{KEY}\n")
    assert stored.returncode == 0, stored.stderr
    done = capataz("doctor", "--agent", "claude-code", "--json", cwd=repo)
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert checks["credential ANTHROPIC_API_KEY"] == {
        "name": "credential ANTHROPIC_API_KEY",
        "ok": True,
        "detail": "PROVIDED in the vault",
        "fix": "",
    }
    assert KEY not in done.stdout + done.stderr


def test_the_real_claude_code_reports_its_version_and_reaches_its_endpoint(
    make_repo: Callable[..., Path], model_api: int
) -> None:
    tools = agent_tools("claude-code")
    bin_dir, shown = (tools / part for part in TOOLS["claude-code"])
    address = f"127.0.0.1:{model_api}"
    repo = make_repo(
        config=(
            '[agents.claude]\npreset = "claude-code"\n'
            f'endpoint = "http://{address}"\nnetwork = ["{address}"]\n'
            f'env = {{ PATH = "{bin_dir}:/usr/local/bin:/usr/bin:/bin" }}\n'
            f'\n[sandbox]\nexpose = ["{shown}"]\n'
        )
    )
    assert capataz("secret", "set", "ANTHROPIC_API_KEY", cwd=repo, stdin=f"{KEY}\n").returncode == 0
    code, checks = doctor(repo, "claude")
    assert code == 0, checks
    assert checks["version"]["detail"].endswith("(Claude Code)")
    assert checks["command"]["detail"].startswith(f"claude: {bin_dir}/claude → ")
    assert checks["endpoint"]["ok"] and checks["credential ANTHROPIC_API_KEY"]["ok"]
