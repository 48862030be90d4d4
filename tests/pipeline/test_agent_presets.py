"""The pipeline side of presets, with scripted agents (no real CLI): failures read from
the output end the run at once, chatter is not progress, state files never land, the
agent's git settings add to capataz's, and a missing command or a crash at start is
explained. The real CLIs are driven in tests/agents."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from tests.conftest import git

from capataz.agents.preset import AgentFailure, OutputReader, Preset, PresetSettings
from capataz.agents.presets import PRESETS
from capataz.config import parse_config
from capataz.models import Outcome, Severity, ViolationType
from capataz.pipeline.supervisor import RunReport, RunSpec, Supervisor
from capataz.sandbox.base import ExecOutcome
from capataz.workspace.repo import Repository


class ScriptReader(OutputReader):
    """Understands the scripted agent's lines: ``FATAL <why>`` fails the run, ``retry``
    lines are chatter, ``usage <in> <out>`` is what it used, ``ERROR-AT-END`` is a
    failure only judged once it has exited."""

    def __init__(self) -> None:
        super().__init__()
        self._error_at_end = False

    def feed(self, stream: str, text: str) -> bool:
        if text.startswith("FATAL "):
            self.failure = AgentFailure(
                reason=f"the model said no: {text[6:]}",
                fix="fix it in [agents.{agent}] (endpoint {endpoint})",
            )
        elif text.startswith("usage "):
            _, tokens_in, tokens_out = text.split()
            self.usage.tokens_in, self.usage.tokens_out = int(tokens_in), int(tokens_out)
            self.usage.model, self.usage.turns = "scripted-1", 1
        elif text == "ERROR-AT-END":
            self._error_at_end = True
        return not text.startswith("retry")

    def finish(self, exit_code: int | None) -> None:
        if self._error_at_end and self.failure is None:
            self.failure = AgentFailure(reason=f"ended badly ({exit_code})", fix="look")


class Scripted(Preset):
    name: ClassVar[str] = "claude-code"  # a name the config accepts
    executable: ClassVar[str] = "bash"
    credential: ClassVar[str] = "ANTHROPIC_API_KEY"
    default_endpoint: ClassVar[str] = "http://127.0.0.1:9"
    description: ClassVar[str] = "a bash script that talks like an agent CLI"

    def settings(self, *, model: str | None, endpoint: str) -> PresetSettings:
        return PresetSettings(command=["bash", "-c", "{instruction}"], ignore=[".scripted/"])

    def reader(self) -> OutputReader:
        return ScriptReader()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(PRESETS, "claude-code", Scripted)
    yield


CONFIG = """
[agents.bot]
preset = "claude-code"
idle_timeout = "{idle}"
timeout = "60s"
memory = "1GiB"
"""


def run(repo_path: Path, instruction: str, config: str, task_id: str = "t1") -> RunReport:
    return Supervisor(Repository.discover(repo_path), parse_config(config)).execute(
        RunSpec(task_id=task_id, instruction=instruction, agent="bot")
    )


def only_failure(report: RunReport) -> tuple[Severity, str, str]:
    found = [v for v in report.violations if v.type is ViolationType.AGENT_FAILED]
    assert len(found) == 1, report.violations
    return found[0].severity, found[0].details, found[0].suggestion


def test_a_failure_in_the_output_stops_the_run_and_blocks_it(
    scripted: None, make_repo: Callable[..., Path]
) -> None:
    repo = make_repo()
    # Without the reader this would sleep until the 60 s timeout, then land part.txt.
    script = "echo partial > part.txt; echo 'FATAL invalid key'; exec sleep 50"
    report = run(repo, script, CONFIG.format(idle="50s"))
    assert report.outcome is Outcome.BLOCKED, report.reason
    assert only_failure(report) == (
        Severity.CRITICAL,
        "the model said no: invalid key",
        "fix it in [agents.bot] (endpoint 127.0.0.1:9)",
    )
    assert report.agent is not None and report.agent.outcome is ExecOutcome.FAILED
    assert report.agent.detail == "stopped by capataz: the model said no: invalid key"
    assert git(repo, "ls-tree", "--name-only", "main").splitlines() == [".gitignore", "README.md"]


def test_a_failure_judged_after_exit_zero_blocks(
    scripted: None, make_repo: Callable[..., Path]
) -> None:
    report = run(make_repo(), "echo x > x.txt; echo ERROR-AT-END", CONFIG.format(idle="50s"))
    assert report.outcome is Outcome.BLOCKED
    assert only_failure(report)[1] == "ended badly (0)"
    assert report.agent is not None and report.agent.exit_code == 0


def test_chatter_forever_is_a_hang(scripted: None, make_repo: Callable[..., Path]) -> None:
    script = "echo start; while :; do echo 'retry in 0.2 s'; sleep 0.2; done"
    report = run(make_repo(), script, CONFIG.format(idle="1s"))
    assert report.outcome is Outcome.BLOCKED
    assert ViolationType.AGENT_HUNG in {v.type for v in report.violations}
    assert report.agent is not None and "retry chatter" in report.agent.detail


def test_usage_goes_to_the_progress_file(scripted: None, make_repo: Callable[..., Path]) -> None:
    report = run(make_repo(), "echo usage 1500 42; echo hi > hi.txt", CONFIG.format(idle="50s"))
    assert report.outcome is Outcome.LANDED, report.reason
    assert report.progress_dir is not None
    metrics = json.loads((report.progress_dir / "progress.json").read_text())["metrics"]
    assert {k: metrics[k] for k in ("tokensIn", "tokensOut", "costUsd", "model", "turns")} == {
        "tokensIn": 1500,
        "tokensOut": 42,
        "costUsd": None,
        "model": "scripted-1",
        "turns": 1,
    }


SHELL = """
[agents.bot]
command = ["bash", "-c", "{instruction}"]
idle_timeout = "50s"
memory = "1GiB"
"""


@pytest.mark.parametrize("preset", [True, False], ids=["preset-ignore", "agent-ignore"])
def test_state_files_never_land(
    scripted: None, make_repo: Callable[..., Path], preset: bool
) -> None:
    """The preset's state files, and an agent's own ``ignore`` globs."""
    config = CONFIG.format(idle="50s") if preset else SHELL + 'ignore = [".aider*"]\n'
    state = "mkdir -p .scripted && echo s > .scripted/s" if preset else "echo h > .aider.history"
    repo = make_repo()
    alone = run(repo, state, config, "alone")
    assert alone.outcome is Outcome.NO_CHANGES, alone.reason
    both = run(repo, f"{state}; echo real > real.txt", config, "both")
    assert both.outcome is Outcome.LANDED, both.reason
    assert [c.path for c in both.file_changes] == ["real.txt"]
    assert "real.txt" in git(repo, "ls-tree", "--name-only", "main")


def test_agent_git_settings_keep_capatazs_safe_directory(make_repo: Callable[..., Path]) -> None:
    config = SHELL + (
        'env = { GIT_CONFIG_COUNT = "1", GIT_CONFIG_KEY_0 = "core.editor", '
        'GIT_CONFIG_VALUE_0 = "true" }\n'
    )
    script = (
        "git status --short >/dev/null && { git config --get-all safe.directory; "
        "git config core.editor; git config user.name; } > seen.txt"
    )
    report = run(make_repo(), script, config)
    assert report.outcome is Outcome.LANDED, report.reason
    assert report.diff is not None
    assert "+*\n+true\n+capataz agent\n" in report.diff


@pytest.fixture
def hidden_tool() -> Iterator[Path]:
    """A venv-like tool under the real home, which the sandbox masks."""
    root = Path.home() / f"capataz-test-tool-{os.urandom(4).hex()}"
    (root / "bin").mkdir(parents=True)
    tool = root / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho works > works.txt\n")
    tool.chmod(0o755)
    try:
        yield tool
    finally:
        tool.unlink()
        (root / "bin").rmdir()
        root.rmdir()


def test_a_masked_command_is_named_with_the_expose_that_fixes_it(
    make_repo: Callable[..., Path], hidden_tool: Path
) -> None:
    config = f'[agents.bot]\ncommand = ["{hidden_tool}"]\nmemory = "1GiB"\n'
    report = run(make_repo(), "do it", config)
    assert report.outcome is Outcome.BLOCKED
    _, details, fix = only_failure(report)
    mask = "/root" if str(hidden_tool).startswith("/root/") else "/home"
    assert f"{hidden_tool} is under {mask}, which the sandbox masks" in details
    assert (
        fix
        == f'show it read-only to agents: [sandbox] expose = ["{hidden_tool.parent.parent}"] in capataz.toml'
    )
    exposed = config + f'[sandbox]\nexpose = ["{hidden_tool.parent.parent}"]\n'
    assert run(make_repo("again"), "do it", exposed).outcome is Outcome.LANDED


def test_a_crash_at_start_under_a_memory_limit_suggests_raising_it(
    make_repo: Callable[..., Path],
) -> None:
    report = run(make_repo(), "kill -ILL $$", SHELL)
    assert report.outcome is Outcome.BLOCKED
    _, details, fix = only_failure(report)
    assert "SIGILL" in details
    assert "memory = 1.0 GiB" in fix and 'memory = "unlimited"' in fix
