"""Acceptance: `capataz gc` through the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.cli.test_cli import CONFIG, assert_one_line_error, capataz
from tests.conftest import git

TWO_DAYS = 2 * 86400
HOLD = "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_SH); print('held', flush=True); time.sleep(600)"


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


@pytest.fixture
def busy_workspace(repo: Path) -> Iterator[Path]:
    """A workspace a run is using: its lock is held by another process."""
    path = repo / ".capataz" / "workspaces" / "busy"
    (path / "tree").mkdir(parents=True)
    (path / "tree" / "work.txt").write_text("in progress\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path.with_name("busy.lock"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        yield path
    finally:
        holder.kill()
        holder.wait()


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything below it look ``seconds`` old."""
    then = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (then, then), follow_symlinks=False)


def test_gc_frees_old_leftovers_and_never_a_workspace_in_use(
    repo: Path, busy_workspace: Path
) -> None:
    blocked = capataz("exec", "mkdir legacy && echo x > legacy/a.py", "--id", "bad-1", cwd=repo)
    assert blocked.returncode == 1
    assert capataz("exec", "echo hi > hi.txt", "--id", "ok-1", cwd=repo).returncode == 0
    store = repo / ".capataz" / "rejected.git"
    rejected = git(repo, "--git-dir", str(store), "rev-parse", "refs/capataz/rejected/bad-1/1")
    crashed = repo / ".capataz" / "workspaces" / "crashed"
    (crashed / "tree").mkdir(parents=True)
    (crashed / "tree" / "left.bin").write_bytes(b"x" * 10_000)

    fresh = json.loads(capataz("gc", "--json", cwd=repo).stdout)  # default: 30 days
    assert fresh["totalBytes"] == 0 and fresh["items"] == []

    for path in (store, repo / ".capataz" / "progress", repo / ".capataz" / "workspaces"):
        _age(path, TWO_DAYS)
    dry = json.loads(capataz("gc", "--older-than", "1d", "--dry-run", "--json", cwd=repo).stdout)
    assert dry["dryRun"] and dry["freed"]["rejected"]["count"] == 1
    assert crashed.exists() and git(repo, "--git-dir", str(store), "cat-file", "-t", rejected)

    done = capataz("gc", "--older-than", "1d", "--json", cwd=repo)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["freed"]["rejected"]["count"] == 1 and data["freed"]["rejected"]["bytes"] > 0
    assert data["freed"]["workspace"] == {"count": 1, "bytes": 10_000}
    assert {i["name"] for i in data["items"] if i["kind"] == "progress"} == {"bad-1", "ok-1"}
    assert {"kind": "workspace", "name": "busy", "why": "in use by a running task"} in data["kept"]
    assert (busy_workspace / "tree" / "work.txt").read_text() == "in progress\n"
    assert not crashed.exists()
    assert not (repo / ".capataz" / "progress" / "bad-1").exists()
    gone = subprocess.run(
        ["git", "--git-dir", str(store), "cat-file", "-e", rejected], capture_output=True
    )
    assert gone.returncode != 0  # the rejected result's objects are gone too
    assert git(repo, "show", "main:hi.txt") == "hi"  # landed work is never touched


def test_gc_prints_a_table_for_people(repo: Path) -> None:
    result = capataz("gc", "--older-than", "12h", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "rejected" in result.stdout and "workspace" in result.stdout
    assert "progress" in result.stdout and "0 B" in result.stdout


def test_gc_refuses_an_age_that_is_not_a_duration(repo: Path) -> None:
    result = capataz("gc", "--older-than", "banana", cwd=repo)
    assert_one_line_error(result, "banana", "30d")
    assert len(result.stderr.strip().splitlines()) == 1
