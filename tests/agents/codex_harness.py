"""Running the real Codex CLI through ``capataz exec`` against the fake Responses server.

Shared by the end-to-end tests (tests/agents/test_codex.py), the benchmark
(bench/agent_codex.py) and the recorder of the reader's transcripts (run this file:
``python tests/agents/codex_harness.py record``), so that all three drive Codex the
same way: the preset's own argv, the key from capataz's vault, capataz's sandbox.

Until the generic preset wiring lands, the agent is configured by hand with exactly
what the preset produces (``command``, ``secrets``, ``memory``) plus ``network = true``
(no allowlist yet). The real CLI is installed by ``scripts/install-agents`` under a
directory the sandbox masks (/root), so it is exposed with ``[sandbox] expose`` and
put first on the agent's PATH, where the preset's bare ``codex`` finds it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.agents.fake_models.openai_responses import FakeResponses, Scenario

from capataz.agents.presets.codex import CodexPreset

TOOLS = Path(os.environ.get("CAPATAZ_AGENT_TOOLS", str(Path.home() / ".cache/capataz/agent-tools")))
CODEX_BIN = TOOLS / "npm/node_modules/.bin"
MODEL = "gpt-5.5"  # a model Codex has metadata for: it offers its apply_patch tool
KEY = "sk-fake-capataz-codex-test"
RECORDED = Path(__file__).parent / "recorded" / "codex"
_LOG_LINE = re.compile(r"^(\S+) \[agent:(out|err)\] (.*)$")


def codex_tools() -> Path:
    """The directory holding the real ``codex``; fails (never skips) when it is missing."""
    if not (CODEX_BIN / "codex").exists():
        raise AssertionError(
            f"the real Codex CLI is not installed under {TOOLS}: run scripts/install-agents "
            "(or point CAPATAZ_AGENT_TOOLS at its directory)"
        )
    return TOOLS


def _toml(value: Any) -> str:
    """A TOML value: JSON strings and arrays of strings are valid TOML."""
    return json.dumps(value)


def agent_config(
    endpoint: str,
    *,
    network: bool = True,
    idle_timeout: str = "60s",
    timeout: str = "3m",
    command: list[str] | None = None,
) -> str:
    """capataz.toml for one ``codex`` agent: the preset's settings, written out.

    Once presets are wired (TIGHTEN at merge), this becomes ``preset = "codex"``,
    ``model``, ``endpoint`` and the preset's own network allowlist."""
    tools = codex_tools()
    settings = CodexPreset().settings(model=MODEL, endpoint=endpoint)
    path = f"{CODEX_BIN}:/usr/local/bin:/usr/bin:/bin"
    return "\n".join(
        [
            "[agents.codex]",
            f"command = {_toml(command or settings.command)}",
            f"secrets = {_toml(settings.secrets)}",
            f"memory = {settings.memory}",
            f"network = {'true' if network else 'false'}",
            f"env = {{ PATH = {_toml(path)} }}",
            f'timeout = "{timeout}"',
            f'idle_timeout = "{idle_timeout}"',
            "",
            "[sandbox]",
            f"expose = {_toml([str(tools)])}",
            "",
        ]
    )


def _git(repo: Path, *args: str) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "user",
        "GIT_AUTHOR_EMAIL": "user@example.invalid",
        "GIT_COMMITTER_NAME": "user",
        "GIT_COMMITTER_EMAIL": "user@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _capataz(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAPATAZ_MASTER_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=repo,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def make_repo(root: Path, config: str) -> Path:
    """A git repository with ``config`` as its capataz.toml and the key in its vault."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "README.md").write_text("# project\n")
    (repo / ".gitignore").write_text(".capataz/\n")
    (repo / "capataz.toml").write_text(config)
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "initial")
    stored = _capataz(repo, "secret", "set", "OPENAI_API_KEY", stdin=KEY)
    assert stored.returncode == 0, stored.stderr
    return repo


@dataclass
class ExecResult:
    """One ``capataz exec --json`` as the user sees it, plus the agent's own lines."""

    returncode: int
    report: dict[str, Any]
    stderr: str
    seconds: float  # from starting `capataz exec` to its exit
    lines: list[tuple[str, str]]  # (stream, text) of the agent, from the run log

    @property
    def outcome(self) -> str:
        return str(self.report.get("outcome"))


def timed_agent_lines(run_log: Path) -> list[tuple[datetime, str, str]]:
    """The agent's (time logged, stream, line) from a run.log, in order."""
    found = []
    for line in run_log.read_text().splitlines():
        match = _LOG_LINE.match(line)
        if match is not None:
            at = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
            found.append((at, match.group(2), match.group(3)))
    return found


def agent_lines(run_log: Path) -> list[tuple[str, str]]:
    """The agent's (stream, line) pairs from a run.log, in order."""
    return [(stream, text) for _, stream, text in timed_agent_lines(run_log)]


def capataz_exec(repo: Path, instruction: str, task_id: str) -> ExecResult:
    started = time.monotonic()
    done = _capataz(repo, "exec", instruction, "--agent", "codex", "--id", task_id, "--json")
    seconds = time.monotonic() - started
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"capataz exec printed no report: {done.stdout}{done.stderr}"
        ) from None
    run_log = Path(report["progress_dir"]) / "artifacts" / "run.log"
    lines = agent_lines(run_log) if run_log.exists() else []
    return ExecResult(done.returncode, report, done.stderr, seconds, lines)


def commits_on_main(repo: Path) -> int:
    return int(_git(repo, "rev-list", "--count", "main"))


def landed_files(repo: Path) -> set[str]:
    """Paths the last commit on main added or changed."""
    changed = _git(repo, "diff", "--name-only", "HEAD~1", "HEAD")
    return set(changed.splitlines())


def show(repo: Path, path: str) -> str:
    return _git(repo, "show", f"main:{path}")


def run_scenario(
    root: Path,
    scenario: Scenario,
    *,
    network: bool = True,
    idle_timeout: str = "60s",
    command: list[str] | None = None,
    path: str = "hello.txt",
) -> tuple[ExecResult, FakeResponses, Path]:
    """One task through ``capataz exec`` against a fresh fake server in ``scenario``;
    ``{fake}`` in ``command`` becomes the server's base URL (its port is chosen now)."""
    with FakeResponses(scenario, path=path) as fake:
        if command is not None:
            command = [part.replace("{fake}", fake.base_url) for part in command]
        config = agent_config(
            fake.base_url, network=network, idle_timeout=idle_timeout, command=command
        )
        repo = make_repo(root, config)
        result = capataz_exec(repo, f"create {path}", f"codex-{scenario.replace('_', '-')}")
    return result, fake, repo


def sandbox_on(command: list[str]) -> list[str]:
    """The preset's argv with Codex's own sandbox back on (what the preset prevents)."""
    bypass = command.index("--dangerously-bypass-approvals-and-sandbox")
    return [*command[:bypass], "--sandbox", "read-only", *command[bypass + 1 :]]


def unbounded_retries(command: list[str]) -> list[str]:
    """The preset's argv with Codex's default of retrying a connection forever."""
    flag = command.index("features.unbounded_connection_retries=false")
    return command[: flag - 1] + command[flag + 1 :]


def unknown_model(command: list[str]) -> list[str]:
    """A model Codex has no metadata for: it then offers only its shell tool."""
    model = command.index("-m") + 1
    return [*command[:model], "gpt-unknown", *command[model + 1 :]]


def record(names: list[str]) -> None:
    """Re-record the reader's transcripts (tests/agents/recorded/codex/NAME.log) from
    real runs: one ``stream<TAB>line`` per agent line, as capataz logged it."""
    import tempfile

    # name → (scenario, network, change to the preset's argv, wall timeout)
    cases: dict[str, tuple[Scenario, bool, Any, str]] = {
        "edit": ("edit", True, None, "3m"),
        "edit_shell": ("edit", True, unknown_model, "3m"),
        "unauthorized": ("unauthorized", True, None, "3m"),
        "rate_limited_then_edit": ("rate_limited_then_edit", True, None, "3m"),
        "no_network": ("edit", False, None, "3m"),
        "disconnect": ("disconnect", True, None, "3m"),
        "inner_sandbox": ("edit", True, sandbox_on, "3m"),
        # retried forever: stopped by the wall timeout after a few notices
        "waiting_for_network": ("edit", False, unbounded_retries, "25s"),
    }
    RECORDED.mkdir(parents=True, exist_ok=True)
    for name in names or list(cases):
        scenario, network, change, timeout = cases[name]
        with tempfile.TemporaryDirectory(prefix="capataz-codex-record-") as tmp:
            with FakeResponses(scenario) as fake:
                command = CodexPreset().settings(model=MODEL, endpoint=fake.base_url).command
                config = agent_config(
                    fake.base_url,
                    network=network,
                    timeout=timeout,
                    command=change(command) if change else None,
                )
                repo = make_repo(Path(tmp), config)
                result = capataz_exec(repo, "create hello.txt", f"record-{name.replace('_', '-')}")
            text = "".join(f"{stream}\t{line}\n" for stream, line in result.lines)
            (RECORDED / f"{name}.log").write_text(text.replace(tmp, "<tmp>"))
            print(f"{name}: {result.outcome} in {result.seconds:.1f} s, {len(result.lines)} lines")


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"]:
        raise SystemExit("usage: python tests/agents/codex_harness.py record [NAME...]")
    record(sys.argv[2:])
