"""Running a real agent CLI through ``capataz exec`` against a fake model server.

Shared by the preset tests (tests/agents/test_*.py) and bench/agent_presets.py. The CLIs
come from ``scripts/install-agents`` (CAPATAZ_AGENT_TOOLS, default
~/.cache/capataz/agent-tools); that directory is under /root (or /home), which the
sandbox masks, so the project's capataz.toml exposes it with ``[sandbox] expose`` and
puts its bin directory on the agent's PATH, as a user with a private install would.

A missing CLI is a failure, never a skip: the test command installs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capataz.agents.presets import preset_named

__all__ = ["TOOLS", "Exec", "PresetProject", "agent_tools"]

# preset -> (its bin directory, the directory to expose), under the tools directory
TOOLS: dict[str, tuple[str, str]] = {
    "claude-code": ("npm/node_modules/.bin", "npm/node_modules"),
    "codex": ("npm/node_modules/.bin", "npm/node_modules"),
    "aider": ("aider/bin", "aider"),
}
EXECUTABLES = {"claude-code": "claude", "codex": "codex", "aider": "aider"}
KEY = "sk-capataz-test-0123456789abcdef"  # what the vault hands the agent
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "user",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "user",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


def agent_tools(*presets: str) -> Path:
    """The tools directory; an AssertionError (a failed test) when the CLI of one of
    ``presets`` (all of them when none is named) is missing."""
    root = Path(os.environ.get("CAPATAZ_AGENT_TOOLS") or Path.home() / ".cache/capataz/agent-tools")
    missing = [
        EXECUTABLES[preset]
        for preset in presets or tuple(EXECUTABLES)
        if not os.access(root / TOOLS[preset][0] / EXECUTABLES[preset], os.X_OK)
    ]
    assert not missing, (
        f"agent CLIs missing in {root}: {', '.join(missing)}; run scripts/install-agents "
        "(or set CAPATAZ_AGENT_TOOLS)"
    )
    return root


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class Exec:
    """One ``capataz exec --json``: its exit code, report and how long it took."""

    returncode: int
    report: dict[str, Any]
    seconds: float
    stderr: str

    @property
    def violations(self) -> list[dict[str, Any]]:
        return list(self.report.get("violations") or [])

    def failure(self) -> dict[str, Any]:
        """The AGENT_FAILED violation (there must be exactly one)."""
        found = [v for v in self.violations if v["type"] == "AGENT_FAILED"]
        assert len(found) == 1, self.violations
        return found[0]


class PresetProject:
    """A git repository whose capataz.toml runs ``preset`` against ``endpoint``."""

    def __init__(
        self, root: Path, preset: str, endpoint: str, *, expose: bool = True, **keys: Any
    ) -> None:
        """``keys`` are extra ``[agents.<preset>]`` keys (``network = false``, say);
        ``expose=False`` leaves the CLIs hidden by the sandbox's masks."""
        self.repo = root
        self.preset = preset
        tools = agent_tools(preset)
        bin_dir, shown = (tools / part for part in TOOLS[preset])
        settings = {"network": True, "timeout": "5m", "idle_timeout": "2m", **keys}
        lines = [
            "[project]",
            f'default_agent = "{preset}"',
            'escalation_timeout = "20s"',
            "",
            f"[agents.{preset}]",
            f'preset = "{preset}"',
            f'endpoint = "{endpoint}"',
            *(f"{key} = {json.dumps(value)}" for key, value in settings.items()),
            f'env = {{ PATH = "{bin_dir}:/usr/local/bin:/usr/bin:/bin" }}',
            "",
            "[sandbox]",
            f'expose = ["{shown}"]' if expose else "expose = []",
        ]
        root.mkdir(parents=True)
        git(root, "init", "--quiet", "--initial-branch=main")
        (root / "README.md").write_text("# project\n")
        (root / ".gitignore").write_text(".capataz/\n")
        (root / "capataz.toml").write_text("\n".join(lines) + "\n")
        git(root, "add", "-A")
        git(root, "commit", "--quiet", "-m", "initial")
        credential = preset_named(preset).credential
        stored = self.capataz("secret", "set", credential, stdin=KEY + "\n")
        assert stored.returncode == 0, stored.stderr

    def capataz(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=self.repo,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **GIT_ENV},
        )

    def exec(self, instruction: str, task_id: str, *options: str) -> Exec:
        """``capataz exec --json`` with ``options`` (``--budget 1k``, say)."""
        started = time.monotonic()
        done = self.capataz("exec", instruction, "--id", task_id, "--json", *options)
        seconds = time.monotonic() - started
        try:
            report = json.loads(done.stdout)
        except ValueError as exc:
            raise AssertionError(f"not a JSON report: {done.stdout!r} {done.stderr!r}") from exc
        return Exec(done.returncode, report, seconds, done.stderr)

    def progress(self, task_id: str) -> dict[str, Any]:
        path = self.repo / ".capataz" / "progress" / task_id / "progress.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def main_files(self) -> list[str]:
        return git(self.repo, "ls-tree", "-r", "--name-only", "main").splitlines()
