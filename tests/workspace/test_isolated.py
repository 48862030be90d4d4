from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import git, snapshot

from capataz.models import ChangeKind
from capataz.workspace.isolated import Workspace, lock_path
from capataz.workspace.repo import Repository


def _workspace(repo_path: Path) -> tuple[Repository, Workspace]:
    repo = Repository.discover(repo_path)
    ws = Workspace.create(
        repo, "t1", repo.branch_tip("main"), repo_path / ".capataz" / "workspaces"
    )
    return repo, ws


def test_workspace_checks_out_the_base_and_borrows_objects(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo(files={"src/app.py": "print(1)\n"})
    before = snapshot(repo_path)
    _, ws = _workspace(repo_path)
    assert (ws.tree / "src" / "app.py").read_text() == "print(1)\n"
    assert not (ws.tree / ".git").exists()  # no git dir inside the agent's tree
    alternates = (ws.git_dir / "objects" / "info" / "alternates").read_text()
    assert alternates.strip().endswith(".git/objects")
    copied = [
        p for p in (ws.git_dir / "objects").rglob("*") if p.is_file() and p.name != "alternates"
    ]
    assert copied == []  # nothing copied
    assert snapshot(repo_path) == before


def test_commit_and_changes_report_kinds_and_line_counts(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo(files={"a.txt": "one\ntwo\n", "gone.txt": "bye\n", "bin.dat": "x"})
    _, ws = _workspace(repo_path)
    (ws.tree / "a.txt").write_text("one\nTWO\nthree\n")
    (ws.tree / "gone.txt").unlink()
    (ws.tree / "new dir").mkdir()
    (ws.tree / "new dir" / "ñ.py").write_text("import os\n")
    (ws.tree / "bin.dat").write_bytes(b"\x00\x01\x02")
    head = ws.commit("agent result")
    assert head is not None
    changes = {f.path: f for f in ws.changes(head).files}
    assert changes["a.txt"].change.kind is ChangeKind.MODIFIED
    assert (changes["a.txt"].change.lines_added, changes["a.txt"].change.lines_removed) == (2, 1)
    assert changes["a.txt"].added == ((2, "TWO"), (3, "three"))
    assert changes["gone.txt"].change.kind is ChangeKind.DELETED
    assert changes["new dir/ñ.py"].change.kind is ChangeKind.ADDED
    assert changes["new dir/ñ.py"].added == ((1, "import os"),)
    assert changes["bin.dat"].change.binary


def test_an_added_line_starting_with_plus_signs_is_not_a_header(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo(files={"notes.md": "x\n"})
    _, ws = _workspace(repo_path)
    (ws.tree / "notes.md").write_text("x\n++ y\n--- z\n")
    head = ws.commit("r")
    assert head is not None
    [diff] = ws.changes(head).files
    assert diff.added == ((2, "++ y"), (3, "--- z"))


def test_nothing_changed_means_no_commit(make_repo: Callable[..., Path]) -> None:
    _, ws = _workspace(make_repo())
    assert ws.commit("nothing") is None


def test_hooks_planted_in_the_tree_never_run(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    _, ws = _workspace(repo_path)
    marker = tmp_path / "hook-ran"
    hooks = ws.tree / ".githooks"
    hooks.mkdir()
    for name in ("pre-commit", "post-commit", "commit-msg"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / name).chmod(0o755)
    # even if the workspace config pointed at them, capataz forces hooksPath=/dev/null
    git(ws.git_dir, "--git-dir", str(ws.git_dir), "config", "core.hooksPath", str(hooks))
    (ws.tree / ".gitattributes").write_text("* filter=evil\n")
    git(
        ws.git_dir,
        "--git-dir",
        str(ws.git_dir),
        "config",
        "filter.evil.clean",
        f"touch {marker}; cat",
    )
    git(ws.git_dir, "--git-dir", str(ws.git_dir), "config", "core.fsmonitor", f"touch {marker}")
    (ws.tree / "x.txt").write_text("x\n")
    assert ws.commit("result") is not None
    assert not marker.exists()


def test_discard_removes_the_workspace(make_repo: Callable[..., Path]) -> None:
    _, ws = _workspace(make_repo())
    ws.discard()
    assert not ws.path.exists()


def test_results_are_written_to_the_workspaces_own_store(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    _, ws = _workspace(repo_path)
    (ws.tree / "big.bin").write_bytes(b"\x00unique-content\x01" * 1000)
    head = ws.commit("agent result")
    assert head is not None
    user = subprocess.run(
        ["git", "-C", str(repo_path), "cat-file", "-e", head], capture_output=True, check=False
    )
    assert user.returncode != 0  # every later sandbox can read the user's store
    assert git(repo_path, "--git-dir", str(ws.git_dir), "cat-file", "-t", head) == "commit"


def test_a_workspace_in_use_is_locked_until_discarded(make_repo: Callable[..., Path]) -> None:
    _, ws = _workspace(make_repo())
    lock = lock_path(ws.path)
    probe = "import fcntl,sys; fcntl.flock(open(sys.argv[1]), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    taken = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True)
    assert taken.returncode != 0  # another process (gc) cannot take it
    ws.discard()
    assert not lock.exists() and not ws.path.exists()


def test_left_out_paths_are_not_part_of_the_result(make_repo: Callable[..., Path]) -> None:
    """An agent's state files (new, or tracked ones it changed or deleted) are undone in
    the tree before the commit, so only the real change lands and nothing hides there."""
    repo_path = make_repo(files={"state/kept.md": "base\n", "state/gone.md": "base\n"})
    _, ws = _workspace(repo_path)
    (ws.tree / ".agent.history.md").write_text("chat\n")
    (ws.tree / ".agent.cache").mkdir()
    (ws.tree / ".agent.cache" / "tags.bin").write_bytes(b"\x00\x01")
    (ws.tree / "state" / "kept.md").write_text("agent wrote here\n")
    (ws.tree / "state" / "gone.md").unlink()
    (ws.tree / "real.py").write_text("print(1)\n")
    ignored = ("state/", ".agent")

    def exclude(path: str) -> bool:
        return path.startswith(ignored)

    assert ws.leave_out(exclude) == [
        ".agent.cache/tags.bin",
        ".agent.history.md",
        "state/gone.md",
        "state/kept.md",
    ]
    head = ws.commit("agent result")
    assert head is not None
    assert [f.path for f in ws.changes(head).files] == ["real.py"]
    assert not (ws.tree / ".agent.history.md").exists()
    assert not (ws.tree / ".agent.cache" / "tags.bin").exists()
    assert (ws.tree / "state" / "kept.md").read_text() == "base\n"
    assert (ws.tree / "state" / "gone.md").read_text() == "base\n"


def test_a_run_that_changed_only_left_out_paths_commits_nothing(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    _, ws = _workspace(repo_path)
    (ws.tree / ".aider.chat.history.md").write_text("chat\n")
    assert ws.leave_out(lambda path: path.startswith(".aider")) == [".aider.chat.history.md"]
    assert ws.commit("agent result") is None
