"""Running the real aider CLI through `capataz exec` against the fake model server.

Shared by tests/agents/test_aider.py and bench/agent_aider.py. The agent's table is
built from what the aider preset produces (``AiderPreset().settings``), with three
stand-ins for parts of issue 11 that are being built elsewhere and are not merged yet:

* ``command`` names aider by its absolute path in the tools directory, and ``[sandbox]
  expose`` shows that directory (it lives under /root, which the sandbox masks);
* ``network = true`` (full network) instead of the preset's allowlist entry
  ``endpoint_address(endpoint)``: the allowlist proxy is not merged yet;
* :data:`GIT_IDENTITY` in ``env``: the sandbox's HOME is empty, so aider finds no git
  identity and crashes writing one into the read-only ``.git/config``. The generic fix
  (a capataz-made global git config, merged with capataz's own entries) is not merged
  yet; meanwhile the agent's ``GIT_CONFIG_*`` list repeats capataz's own
  ``safe.directory`` entry, which an agent list would otherwise replace.

Once those land, the table becomes ``preset = "aider"``, ``model`` and ``endpoint``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capataz.agents.presets.aider import AiderPreset

__all__ = [
    "API_KEY",
    "GIT_IDENTITY",
    "AiderRun",
    "agent_lines",
    "aider_executable",
    "aider_repo",
    "exec_aider",
    "run_capataz",
    "tools_dir",
]

API_KEY = "sk-test-capataz-aider-0123456789"
GIT_IDENTITY = {
    "GIT_CONFIG_COUNT": "3",
    "GIT_CONFIG_KEY_0": "safe.directory",  # capataz's own entry, repeated (see above)
    "GIT_CONFIG_VALUE_0": "*",
    "GIT_CONFIG_KEY_1": "user.name",
    "GIT_CONFIG_VALUE_1": "aider",
    "GIT_CONFIG_KEY_2": "user.email",
    "GIT_CONFIG_VALUE_2": "aider@capataz.invalid",
}
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
    identity: bool = True,
    extra: str = "",
) -> str:
    """capataz.toml with an ``aider`` agent as the preset configures it (see above)."""
    settings = AiderPreset().settings(model=model, endpoint=endpoint)
    command = [str(aider_executable()), *settings.command[1:]]
    env = {**settings.env, **(GIT_IDENTITY if identity else {})}
    lines = [
        "[sandbox]",
        f"expose = {_toml([str(tools_dir())])}",
        "",
        "[agents.aider]",
        f"command = {_toml(command)}",
        f"secrets = {_toml(settings.secrets)}",
        f"memory = {settings.memory}",
        f"ignore = {_toml(settings.ignore)}",
        f"network = {'true' if network else 'false'}",
        'timeout = "5m"',
        extra,
        "",
        "[agents.aider.env]",
        *(f"{name} = {_toml(value)}" for name, value in env.items()),
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
    identity: bool = True,
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
            endpoint, model=model, network=network, identity=identity, extra=extra
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
