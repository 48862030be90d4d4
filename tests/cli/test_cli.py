"""Acceptance: the `capataz` command as a user runs it, in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import host_pids, wait_for

CONFIG = """
[project]
escalation_timeout = "30s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
idle_timeout = "30s"  # a silent agent on a loaded machine is not a hang

[policy]
forbidden_paths = ["legacy/**"]
max_changed_files = 2
"""


def capataz(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    assert text.startswith("error:"), result.stderr
    for needle in needles:
        assert needle in text


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


def test_exec_json_lands_and_exits_zero(repo: Path) -> None:
    result = capataz("exec", "echo hi > hi.txt", "--id", "ok-1", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "landed" and data["decision"] == "COMPLETED"
    assert data["file_changes"] == [
        {"path": "hi.txt", "kind": "added", "lines_added": 1, "lines_removed": 0, "binary": False}
    ]
    assert data["agent"]["exit_code"] == 0 and data["agent"]["wall_seconds"] > 0
    assert git(repo, "show", "main:hi.txt") == "hi"


def test_exec_human_view_shows_summary_and_blocked_exits_one(repo: Path) -> None:
    result = capataz("exec", "mkdir legacy && echo x > legacy/a.py", "--id", "bad-1", cwd=repo)
    assert result.returncode == 1
    assert "blocked" in result.stdout and "FORBIDDEN_PATH" in result.stdout
    assert "rolled back" in result.stdout
    assert git(
        repo, "--git-dir", ".capataz/rejected.git", "rev-parse", "refs/capataz/rejected/bad-1/1"
    )


def test_decide_from_another_shell_answers_a_waiting_exec(repo: Path) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-m", "capataz", "exec", "touch a b c", "--id", "esc-1", "--json"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    escalation = repo / ".capataz" / "progress" / "esc-1" / "escalation.json"
    wait_for(escalation.exists, "the run asks a human")
    answer = capataz("decide", "esc-1", "approve", "--note", "fine", cwd=repo)
    assert answer.returncode == 0 and "recorded" in answer.stdout
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0
    assert json.loads(out)["outcome"] == "landed"
    again = capataz("decide", "esc-1", "reject", cwd=repo)
    assert_one_line_error(again, "already answered")


def test_modify_exits_three_and_resume_lands(repo: Path) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-m", "capataz", "exec", "touch a b c", "--id", "mod-1", "--json"],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    escalation = repo / ".capataz" / "progress" / "mod-1" / "escalation.json"
    wait_for(lambda: escalation.exists() or waiting.poll() is not None, "the run asks a human")
    (repo / ".capataz" / "progress" / "mod-1" / "escalation-decision.json").write_text(
        '{"decision": "modify", "note": "trim it"}'
    )
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 3 and json.loads(out)["outcome"] == "awaiting-human"
    (repo / ".capataz" / "workspaces" / "mod-1" / "tree" / "c").unlink()
    resumed = capataz("resume", "mod-1", "--json", cwd=repo)
    assert resumed.returncode == 0, resumed.stderr
    assert git(repo, "ls-tree", "--name-only", "main").split() == [
        ".gitignore",
        "README.md",
        "a",
        "b",
        "capataz.toml",
    ]
    assert_one_line_error(capataz("resume", "mod-1", cwd=repo), "not waiting for edits")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("exec", "x", "--agent", "gpt"), ("unknown agent 'gpt'", "known agents: shell")),
        (("exec", "x", "--id", "../escape"), ("invalid task id",)),
        (("decide", "nope", "approve"), ("has no escalation",)),
        (("decide", "nope", "ship-it"), ("'ship-it' is not a decision",)),
        (("resume", "nope"), ("no task 'nope'",)),
    ],
)
def test_bad_input_is_one_clear_line(
    repo: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    assert_one_line_error(capataz(*args, cwd=repo), *needles)


def test_broken_config_names_line_and_key(repo: Path) -> None:
    (repo / "capataz.toml").write_text('[agents.shell]\ncommand = ["bash"]\nmemory = "lots"\n')
    assert_one_line_error(
        capataz("exec", "true", cwd=repo), "capataz.toml:3", "agents.shell.memory"
    )


def test_outside_a_repository(tmp_path: Path) -> None:
    assert_one_line_error(capataz("exec", "true", cwd=tmp_path), "not inside a git repository")


def test_missing_target_branch(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(config='[project]\ntarget_branch = "trunk"\n')
    assert_one_line_error(capataz("exec", "true", cwd=repo), "branch 'trunk' does not exist")


def test_unsandboxed_runs_warn(make_repo: Callable[..., Path]) -> None:
    repo = make_repo(config='[project]\nsandbox = "none"\n')
    result = capataz("exec", "echo hi > hi.txt", "--json", cwd=repo)
    assert result.returncode == 0
    assert "WARNING" in result.stderr and 'sandbox = "none"' in result.stderr


def test_init_writes_config_and_ignores_capataz_dir(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    (repo / ".gitignore").write_text("node_modules/\n")
    result = capataz("init", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert 'target_branch = "main"' in (repo / "capataz.toml").read_text()
    assert (repo / ".gitignore").read_text() == "node_modules/\n.capataz/\n"
    assert_one_line_error(capataz("init", cwd=repo), "already exists", "--force")
    assert capataz("init", "--force", cwd=repo).returncode == 0
    assert (repo / ".gitignore").read_text().count(".capataz/") == 1


def test_doctor_proves_the_sandbox(repo: Path) -> None:
    result = capataz("doctor", "--json", cwd=repo)
    assert result.returncode == 0, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["sandbox starts"]["ok"] and checks["sandbox network"]["ok"]
    assert "no network" in checks["sandbox network"]["detail"]


def test_doctor_tries_a_network_allowlist_when_one_is_configured(repo: Path) -> None:
    (repo / "capataz.toml").write_text(
        '[agents.claude]\ncommand = ["claude"]\nnetwork = ["api.anthropic.com"]\n'
    )
    result = capataz("doctor", "--json", cwd=repo)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["network allowlists"]["ok"], checks["network allowlists"]
    assert "agent claude" in checks["network allowlists"]["detail"]


def test_doctor_reports_a_broken_config(repo: Path) -> None:
    (repo / "capataz.toml").write_text("[project\n")
    result = capataz("doctor", cwd=repo)
    assert result.returncode == 1 and "not valid TOML" in result.stdout


def test_demo_shows_every_outcome(tmp_path: Path) -> None:
    result = capataz("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    for task in ("demo-1-lands", "demo-2-blocked", "demo-3-escalates", "demo-4-hangs"):
        assert task in result.stdout
    assert "AGENT_HUNG" in result.stdout and "FORBIDDEN_PATH" in result.stdout


def test_usage_errors_exit_two_without_traceback(repo: Path) -> None:
    result = capataz("exec", cwd=repo)
    assert result.returncode == 2
    assert "Missing argument" in result.stderr and "Traceback" not in result.stderr


# An agent nothing stops but a signal: no idle timeout (it is silent after "go") and a
# wall-clock timeout far beyond any test, however loaded the machine.
PATIENT = CONFIG.replace('idle_timeout = "30s"', 'idle_timeout = "1h"\ntimeout = "2h"')


def _as_a_terminal_job() -> None:
    """The signals as a terminal's foreground job has them. Whoever started the suite
    may have left SIGINT ignored (a script's background job does), and a process that
    starts with a signal ignored rightly keeps ignoring it."""
    import signal

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def _hangups_ignored() -> None:
    """As ``nohup`` starts a command."""
    import signal

    _as_a_terminal_job()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_under_nohup_a_hangup_does_not_roll_the_run_back(make_repo: Callable[..., Path]) -> None:
    import signal

    repo = make_repo(config=PATIENT)
    marker = f"3008.{int.from_bytes(os.urandom(4))}"
    running = subprocess.Popen(
        [sys.executable, "-m", "capataz", "exec", f"echo go; sleep {marker}", "--id", "nohup-1"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=_hangups_ignored,  # noqa: PLW1509 (a test; no threads hold locks)
    )
    log = repo / ".capataz" / "progress" / "nohup-1" / "artifacts" / "run.log"
    wait_for(lambda: log.exists() and "go" in log.read_text(), "the agent has started")
    running.send_signal(signal.SIGHUP)
    running.send_signal(signal.SIGTERM)  # signals arrive in order: SIGHUP came first
    _, stderr = running.communicate(timeout=240)
    assert running.returncode == 128 + signal.SIGTERM, stderr  # SIGTERM stopped it
    progress = json.loads(
        (repo / ".capataz" / "progress" / "nohup-1" / "progress.json").read_text()
    )
    assert "SIGTERM received" in progress["reason"], progress
    assert host_pids(marker) == []


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_ctrl_c_rolls_back_and_leaves_nothing_running(
    make_repo: Callable[..., Path], signal_name: str
) -> None:
    """Ctrl-C, a `kill` and a closed terminal all roll back the same way."""
    import signal

    repo = make_repo(config=PATIENT)
    marker = f"3007.{int.from_bytes(os.urandom(4))}"  # names the agent's sleep on the host
    running = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capataz",
            "exec",
            f"echo go; touch half.txt; sleep {marker}",
            "--id",
            "int-1",
            "--json",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread
        preexec_fn=_as_a_terminal_job,  # noqa: PLW1509 (a test; no threads hold locks)
    )
    log = repo / ".capataz" / "progress" / "int-1" / "artifacts" / "run.log"
    wait_for(lambda: log.exists() and "go" in log.read_text(), "the agent has started")
    assert host_pids(marker), "the agent's sleep is visible on the host"
    running.send_signal(getattr(signal, signal_name))
    try:
        _, stderr = running.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # say where it hangs: faulthandler's stacks
        running.send_signal(signal.SIGABRT)
        _, stderr = running.communicate(timeout=60)
        pytest.fail(f"exec did not end within 240 s of {signal_name}; its stacks:\n{stderr}")
    assert running.returncode == 128 + getattr(signal, signal_name), stderr
    assert "Traceback" not in stderr
    progress = json.loads((repo / ".capataz" / "progress" / "int-1" / "progress.json").read_text())
    assert progress["status"] == "rolled-back", progress
    expected = "interrupted" if signal_name == "SIGINT" else f"{signal_name} received"
    assert expected in progress["reason"]
    assert not (repo / ".capataz" / "workspaces" / "int-1").exists()
    assert "half.txt" not in git(repo, "ls-tree", "--name-only", "main")
    assert host_pids(marker) == []
