"""`capataz init --agent PRESET`: a working agent and the credential request its key answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.agents.harness import TOOLS, agent_tools

from capataz.agents.commands import resolve_agent
from capataz.config import load_config


def capataz(
    *args: str, cwd: Path, stdin: str = "", path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_init_agent_writes_the_agent_and_its_credential_request(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    done = capataz("init", "--agent", "claude-code", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "capataz secret set ANTHROPIC_API_KEY" in " ".join(done.stdout.split())
    config = load_config(repo)
    assert config.project.default_agent == "claude-code"
    agent = resolve_agent(config, "claude-code")
    assert agent.preset == "claude-code" and agent.secrets == ["ANTHROPIC_API_KEY"]
    assert agent.command is not None and agent.command[0] == "claude"
    requests = json.loads(capataz("request", "list", "--json", cwd=repo).stdout)
    assert [(r["id"], r["status"], r["agents"]) for r in requests] == [
        ("REQ-ANTHROPIC_API_KEY", "WAITING", ["claude-code"])
    ]
    refused = capataz("exec", "do it", cwd=repo)  # the key is not in the vault yet
    assert refused.returncode == 2
    assert "waiting for credential request REQ-ANTHROPIC_API_KEY" in refused.stderr
    assert (
        capataz(
            "secret", "set", "ANTHROPIC_API_KEY", cwd=repo, stdin="sk-ant-test-0123456789abcdef\n"
        ).returncode
        == 0
    )
    requests = json.loads(capataz("request", "list", "--json", cwd=repo).stdout)
    assert requests[0]["status"] == "PROVIDED"


def test_init_offers_the_presets_found_on_path(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    bin_dir = agent_tools("claude-code") / TOOLS["claude-code"][0]
    done = capataz("init", cwd=repo, path=f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert "found claude on PATH: [agents.claude-code] is offered" in " ".join(done.stdout.split())
    text = (repo / "capataz.toml").read_text()
    assert '# [agents.claude-code]\n# preset = "claude-code"\n' in text
    assert load_config(repo).project.default_agent == "shell"  # nothing chosen for the user
    bare = make_repo("bare")
    assert capataz("init", cwd=bare, path="/usr/bin:/bin").returncode == 0
    assert "# [agents.claude-code]" not in (bare / "capataz.toml").read_text()


def test_init_with_an_unknown_preset_names_the_known_ones(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    done = capataz("init", "--agent", "gpt-pilot", cwd=repo)
    assert done.returncode == 2
    assert (
        "unknown agent preset 'gpt-pilot'; known presets: aider, claude-code, codex" in done.stderr
    )
    assert not (repo / "capataz.toml").exists()
