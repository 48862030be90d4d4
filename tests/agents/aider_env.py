"""Running the real aider CLI through `capataz exec` against the fake model server.

Shared by tests/agents/test_aider.py and bench/agent_aider.py. The agent is the aider
preset as a user configures it (``preset = "aider"``, ``model``, ``endpoint``), plus what
a private install needs: ``[sandbox] expose`` shows the tools directory (it lives under
/root, which the sandbox masks) and the agent's PATH names its bin directory. Its network
is the preset's default, the endpoint's host:port through the allowlist proxy, unless a
test takes it away (``network = false``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY",
    "AiderRun",
    "agent_lines",
    "aider_executable",
    "aider_repo",
    "exec_aider",
    "run_capataz",
    "tools_dir",
]

API_KEY = "sk-test-capataz-aider-0123456789"
_GIT = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "user",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "user",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


def tools_dir() -> Path:
    """Where scripts/install-agents put the real CLIs (the same default it uses)."""
    default = Path.home() / ".cache" / "capataz" / "agent-tools"
    return Path(os.environ.get("CAPATAZ_AGENT_TOOLS") or default).expanduser()


def aider_executable() -> Path:
    """The pinned aider; a clear failure (never a skip) when it is not installed."""
    path = tools_dir() / "aider" / "bin" / "aider"
    if not os.access(path, os.X_OK):
        raise AssertionError(
            f"the real aider CLI is not installed at {path}: run scripts/install-agents "
            "(set CAPATAZ_AGENT_TOOLS to use another directory)"
        )
    return path


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON strings and string arrays are valid TOML


def aider_config(
    endpoint: str,
    *,
    model: str = "fake-model",
    network: bool = True,
    idle_timeout: str = "2m",
    extra: str = "",
) -> str:
    """capataz.toml with the aider preset against ``endpoint``; ``network=False`` takes
    its network away (the preset would allow the endpoint)."""
    bin_dir = aider_executable().parent  # a clear failure when it is not installed
    path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
    lines = [
        "[sandbox]",
        f"expose = {_toml([str(tools_dir() / 'aider')])}",
        "",
        "[agents.aider]",
        'preset = "aider"',
        f"model = {_toml(model)}",
        f"endpoint = {_toml(endpoint)}",
        *([] if network else ["network = false"]),
        'timeout = "5m"',
        f"idle_timeout = {_toml(idle_timeout)}",
        f"env = {{ PATH = {_toml(path)} }}",
        extra,
        "",
    ]
    return "\n".join(lines)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def run_capataz(
    repo: Path, *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=repo,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **_GIT},
    )


def aider_repo(
    root: Path,
    endpoint: str,
    *,
    model: str = "fake-model",
    network: bool = True,
    idle_timeout: str = "2m",
    extra: str = "",
    files: dict[str, str] | None = None,
) -> Path:
    """A git repository whose capataz.toml has the aider agent, with its key in the vault."""
    repo = root / "project"
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    content = {
        "README.md": "# project\n",
        ".gitignore": ".capataz/\n",
        "capataz.toml": aider_config(
            endpoint, model=model, network=network, idle_timeout=idle_timeout, extra=extra
        ),
        **(files or {}),
    }
    for rel, text in content.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "initial")
    stored = run_capataz(repo, "secret", "set", "OPENAI_API_KEY", stdin=API_KEY + "\n")
    assert stored.returncode == 0, stored.stderr
    return repo


@dataclass(frozen=True)
class AiderRun:
    """One `capataz exec` of the aider agent, as the user would see it."""

    repo: Path
    task_id: str
    returncode: int
    result: dict[str, Any]
    seconds: float  # wall time of the whole `capataz exec`
    stderr: str

    @property
    def lines(self) -> list[tuple[str, str]]:
        return agent_lines(self.repo, self.task_id)

    def landed_files(self) -> list[str]:
        """Paths the landed commit changed (empty when nothing landed)."""
        commit = self.result.get("landed_commit")
        if not commit:
            return []
        names = _git(self.repo, "show", "--name-only", "--format=", commit)
        return [name for name in names.splitlines() if name]

    def show(self, path: str) -> str:
        return _git(self.repo, "show", f"main:{path}")


def exec_aider(repo: Path, instruction: str, task_id: str) -> AiderRun:
    started = time.monotonic()
    done = run_capataz(repo, "exec", instruction, "--agent", "aider", "--id", task_id, "--json")
    seconds = time.monotonic() - started
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"capataz exec printed no JSON: {done.stdout}\n{done.stderr}") from exc
    return AiderRun(repo, task_id, done.returncode, result, seconds, done.stderr)


def agent_lines(repo: Path, task_id: str) -> list[tuple[str, str]]:
    """The agent's own lines from the run's run.log, as (stream, text)."""
    log = repo / ".capataz" / "progress" / task_id / "artifacts" / "run.log"
    found = []
    for raw in log.read_text(encoding="utf-8").splitlines():
        _, _, rest = raw.partition(" ")
        for stream in ("out", "err"):
            tag = f"[agent:{stream}] "
            if rest.startswith(tag):
                found.append((stream, rest.removeprefix(tag)))
            elif rest == tag.rstrip():
                found.append((stream, ""))
    return found
