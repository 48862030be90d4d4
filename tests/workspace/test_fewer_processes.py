"""The shortcuts that spare git processes per run answer exactly what git would: the
target branch read from its loose ref file (git itself when the ref is packed or odd),
one ``git diff`` for the listing and the patch, the landing's private git dir kept
between landings (rewritten where it went stale), and a fast-forward's checkout moved
from the diff the gates judged."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import git

from capataz.models import ChangeKind, Outcome
from capataz.workspace.isolated import Workspace
from capataz.workspace.landing import land
from capataz.workspace.repo import Repository


def _workspace(repo: Repository, task_id: str = "t1") -> Workspace:
    return Workspace.create(
        repo, task_id, repo.branch_tip("main"), repo.root / ".capataz" / "workspaces"
    )


def test_the_branch_tip_is_read_from_the_ref_file_or_else_from_git(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    repo = Repository.discover(repo_path)
    tip = git(repo_path, "rev-parse", "main")
    assert repo.loose_ref("refs/heads/main") == tip
    assert repo.branch_tip("main") == tip
    git(repo_path, "pack-refs", "--all")  # no loose file now: git answers
    assert not (repo.common_dir / "refs/heads/main").exists()
    assert repo.loose_ref("refs/heads/main") is None
    assert repo.branch_tip("main") == tip
    for odd in ("refs/heads/../HEAD", "HEAD", "refs/heads/.hidden", "refs/heads/x.lock"):
        assert repo.loose_ref(odd) is None
    (repo.common_dir / "refs/heads/sym").write_text("ref: refs/heads/main\n")
    assert repo.loose_ref("refs/heads/sym") is None  # symbolic: git's to resolve


def test_one_diff_gives_the_listing_and_the_same_patch_as_two(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo(files={"a.txt": "one\n", "gone.txt": "x\n"})
    repo = Repository.discover(repo_path)
    ws = _workspace(repo)
    (ws.tree / "a.txt").write_text("one\ntwo\n")
    (ws.tree / "gone.txt").unlink()
    (ws.tree / "sp ace\tand\nnewline ñ.txt").write_text("new\n")
    (ws.tree / "bin.dat").write_bytes(b"\x00\x01\x02")
    head = ws.commit("result")
    assert head is not None
    changes = ws.changes()
    assert changes.head == head
    kinds = {c.path: (c.kind, c.lines_added, c.lines_removed, c.binary) for c in changes.changes}
    assert kinds == {
        "a.txt": (ChangeKind.MODIFIED, 1, 0, False),
        "gone.txt": (ChangeKind.DELETED, 0, 1, False),
        "sp ace\tand\nnewline ñ.txt": (ChangeKind.ADDED, 1, 0, False),
        "bin.dat": (ChangeKind.ADDED, 0, 0, True),
    }
    alone = subprocess.run(
        ["git", "--git-dir", str(ws.git_dir), "diff", "--no-renames", "--no-color", ws.base, head],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", errors="replace")
    assert changes.patch == alone
    added = {f.path: f.added for f in changes.files}
    assert added["a.txt"] == ((2, "two"),)


def test_the_landing_git_dir_is_kept_and_mended_between_landings(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    repo = Repository.discover(repo_path)
    ws = _workspace(repo, "t1")
    (ws.tree / "one.txt").write_text("1\n")
    ws.commit("one")
    first = land(repo, ws, "main", "merge", ws.changes())
    assert first.outcome is Outcome.LANDED
    kept = repo_path / ".capataz" / "land.git"
    assert (kept / "HEAD").is_file()
    (kept / "objects/info/alternates").write_text("/nowhere/objects\n")  # gone stale
    (kept / "info/attributes").write_text("* filter=evil\n")
    ws2 = _workspace(repo, "t2")
    (ws2.tree / "two.txt").write_text("2\n")
    ws2.commit("two")
    second = land(repo, ws2, "main", "merge", ws2.changes())
    assert second.outcome is Outcome.LANDED
    assert (repo_path / "two.txt").read_text() == "2\n"
    assert git(repo_path, "status", "--porcelain") == ""
    assert (kept / "objects/info/alternates").read_text() == f"{repo.common_dir / 'objects'}\n"
    assert "filter=evil" not in (kept / "info/attributes").read_text()
    assert (kept / "HEAD").read_text() == f"{first.commit}\n"  # the old tip of that landing


def test_changes_of_another_commit_are_not_trusted_for_the_checkout(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    repo = Repository.discover(repo_path)
    tip = git(repo_path, "rev-parse", "main")
    ws = _workspace(repo)
    (ws.tree / "first.txt").write_text("1\n")
    ws.commit("first")
    stale = ws.changes()  # then the result grows: these no longer describe it
    (ws.tree / ".gitattributes").write_text("*.txt text eol=crlf\n")
    ws.commit("second")
    landed = land(repo, ws, "main", "merge", stale)
    assert landed.outcome is Outcome.BRANCH  # git's own diff saw the .gitattributes
    assert ".gitattributes" in landed.message
    assert git(repo_path, "rev-parse", "main") == tip
    assert not (repo_path / "first.txt").exists()
