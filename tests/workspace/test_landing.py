from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git, snapshot

from capataz.models import Outcome
from capataz.workspace.isolated import Workspace
from capataz.workspace.landing import land, rollback
from capataz.workspace.repo import Repository


def _agent_result(
    repo_path: Path, files: dict[str, str], task_id: str = "t1"
) -> tuple[Repository, Workspace]:
    repo = Repository.discover(repo_path)
    ws = Workspace.create(
        repo, task_id, repo.branch_tip("main"), repo_path / ".capataz" / "workspaces"
    )
    for rel, text in files.items():
        (ws.tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.tree / rel).write_text(text)
    assert ws.commit("agent result") is not None
    return repo, ws


def test_lands_by_fast_forward_into_a_clean_checked_out_branch(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    repo, ws = _agent_result(repo_path, {"hello.txt": "hi\n"})
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.LANDED
    assert git(repo_path, "rev-parse", "main") == result.commit
    assert (repo_path / "hello.txt").read_text() == "hi\n"  # the checked-out tree follows
    assert git(repo_path, "status", "--porcelain") == ""
    assert "capataz/t1" not in git(repo_path, "branch", "--list")


def test_dirty_checkout_is_never_clobbered(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo(files={"app.py": "v1\n"})
    (repo_path / "app.py").write_text("my uncommitted work\n")
    git(repo_path, "stash", "list")
    before = snapshot(repo_path)
    tip = git(repo_path, "rev-parse", "main")
    repo, ws = _agent_result(repo_path, {"hello.txt": "hi\n"})
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.BRANCH
    assert "uncommitted changes" in result.message
    assert git(repo_path, "rev-parse", "main") == tip
    after = snapshot(repo_path)
    assert {k: v for k, v in after.items() if k != "<refs>"} == {
        k: v for k, v in before.items() if k != "<refs>"
    }
    assert git(repo_path, "rev-parse", "capataz/t1") == result.commit


def test_branch_not_checked_out_moves_without_touching_the_tree(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo()
    git(repo_path, "checkout", "--quiet", "-b", "feature")
    (repo_path / "scratch.txt").write_text("untracked\n")
    before = snapshot(repo_path)
    repo, ws = _agent_result(repo_path, {"hello.txt": "hi\n"})
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.LANDED
    assert git(repo_path, "show", "main:hello.txt") == "hi"
    after = snapshot(repo_path)
    assert after["<status>"] == before["<status>"]
    assert not (repo_path / "hello.txt").exists()


def test_result_is_rebased_when_the_branch_moved_on(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    repo, ws = _agent_result(repo_path, {"agent.txt": "a\n"})
    (repo_path / "human.txt").write_text("h\n")
    git(repo_path, "add", "human.txt")
    git(repo_path, "commit", "--quiet", "-m", "human work")
    human = git(repo_path, "rev-parse", "main")
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.LANDED and "rebased" in result.message
    assert git(repo_path, "rev-parse", "main~1") == human
    assert (repo_path / "agent.txt").exists() and (repo_path / "human.txt").exists()


def test_conflicting_result_stays_on_its_branch(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo(files={"app.py": "v1\n"})
    repo, ws = _agent_result(repo_path, {"app.py": "agent\n"})
    (repo_path / "app.py").write_text("human\n")
    git(repo_path, "commit", "--quiet", "-am", "human edit")
    tip = git(repo_path, "rev-parse", "main")
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.BRANCH and "conflicts" in result.message
    assert git(repo_path, "rev-parse", "main") == tip
    assert git(repo_path, "show", "capataz/t1:app.py") == "agent"


def test_branch_mode_always_leaves_a_branch(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    tip = git(repo_path, "rev-parse", "main")
    repo, ws = _agent_result(repo_path, {"hello.txt": "hi\n"})
    result = land(repo, ws, "main", "branch")
    assert result.outcome is Outcome.BRANCH
    assert git(repo_path, "rev-parse", "main") == tip
    assert git(repo_path, "show", "capataz/t1:hello.txt") == "hi"


def test_rollback_keeps_the_rejected_commit_out_of_the_users_store(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    before = snapshot(repo_path)
    artifacts = tmp_path / "artifacts"
    store = repo_path / ".capataz" / "rejected.git"
    for attempt in (1, 2):
        repo, ws = _agent_result(repo_path, {"bad.txt": f"attempt {attempt}\n"})
        result = ws.head()
        done = rollback(
            repo, ws, result=result, target="main", reason="blocked", artifacts=artifacts
        )
        assert done.rejected_ref == f"refs/capataz/rejected/t1/{attempt}"
        assert git(repo_path, "--git-dir", str(store), "rev-parse", done.rejected_ref) == result
        assert not _has_object(repo_path, result)  # later agents read the user's store
        assert done.inspect == f"git --git-dir .capataz/rejected.git show {done.rejected_ref}"
        shown = git(repo_path, "--git-dir", ".capataz/rejected.git", "show", done.rejected_ref)
        assert f"attempt {attempt}" in shown  # the command we tell the user works
        assert not ws.path.exists()
    state = json.loads((artifacts / "rollback-state.json").read_text())
    assert (
        state["tempCommit"] and state["originalBranch"] == "main" and state["reason"] == "blocked"
    )
    assert state["inspect"].startswith("git --git-dir .capataz/rejected.git show ")
    assert (artifacts / "rollback-log.txt").read_text().count("rollback of t1") == 2
    assert snapshot(repo_path) == before


def test_rollback_of_a_secret_keeps_no_object_anywhere(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    repo, ws = _agent_result(repo_path, {"leak.txt": "token=hunter2-unique\n"})
    blob = git(repo_path, "--git-dir", str(ws.git_dir), "rev-parse", f"{ws.head()}:leak.txt")
    done = rollback(
        repo,
        ws,
        result=ws.head(),
        target="main",
        reason="secret",
        artifacts=tmp_path / "a",
        keep=False,
    )
    assert done.rejected_ref is None and "carries a secret" in " ".join(done.steps)
    assert not _has_object(repo_path, blob)
    leftovers = subprocess.run(
        ["grep", "-rl", "hunter2", str(repo_path)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""  # loose objects are compressed: also look in git's view
    store = repo_path / ".capataz" / "rejected.git"
    assert not store.exists() or not _has_object(repo_path, blob, git_dir=store)


def test_objects_reach_the_users_store_only_when_the_result_lands(
    make_repo: Callable[..., Path],
) -> None:
    repo_path = make_repo(files={"app.py": "v1\n"})
    repo, ws = _agent_result(repo_path, {"hello.txt": "hi\n"})
    assert not _has_object(repo_path, ws.head())
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.LANDED
    assert _has_object(repo_path, result.commit)
    assert git(repo_path, "fsck", "--connectivity-only", "--no-dangling") == ""
    ws.discard()
    assert git(repo_path, "show", "main:hello.txt") == "hi"  # nothing lived only in the ws


def _has_object(repo_path: Path, name: str, git_dir: Path | None = None) -> bool:
    argv = ["git", "--git-dir", str(git_dir or repo_path / ".git"), "cat-file", "-e", name]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _configure_filter(repo_path: Path, marker: Path) -> None:
    """The user's own filter driver, as git-lfs or git-crypt install one."""
    git(repo_path, "config", "filter.demo.smudge", f"touch {marker}; cat")
    git(repo_path, "config", "filter.demo.clean", f"touch {marker}; cat")
    git(repo_path, "config", "filter.demo.process", f"sh -c 'touch {marker}'")
    git(repo_path, "config", "merge.demo.driver", f"touch {marker}; false")


def test_attributes_planted_by_the_result_never_reach_the_users_tree(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    marker = tmp_path / "filter-ran"
    _configure_filter(repo_path, marker)
    before = snapshot(repo_path)
    tip = git(repo_path, "rev-parse", "main")
    repo, ws = _agent_result(
        repo_path,
        {".gitattributes": "*.dat filter=demo ident\n", "a.dat": "$Id$ data\n"},
    )
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.BRANCH
    assert ".gitattributes" in result.message and "git merge capataz/t1" in result.message
    assert not marker.exists()
    assert git(repo_path, "rev-parse", "main") == tip
    assert {k: v for k, v in snapshot(repo_path).items() if k != "<refs>"} == {
        k: v for k, v in before.items() if k != "<refs>"
    }
    assert git(repo_path, "show", "capataz/t1:a.dat") == "$Id$ data"


@pytest.mark.parametrize(
    ("where", "rule", "needs"),
    [
        (".gitattributes", "*.dat filter=demo", "filter 'demo'"),
        ("info/attributes", "*.dat ident", "ident"),
        ("attributesFile", "*.dat working-tree-encoding=UTF-16", "working-tree-encoding"),
        (".gitattributes", "*.dat eol=crlf", "CRLF"),
    ],
)
def test_a_checkout_that_needs_the_users_conversions_is_left_alone(
    make_repo: Callable[..., Path], tmp_path: Path, where: str, rule: str, needs: str
) -> None:
    files = {"a.dat": "$Id$ v1\n"}
    if where == ".gitattributes":
        files[".gitattributes"] = rule + "\n"
    repo_path = make_repo(files=files)
    if where == "info/attributes":
        (repo_path / ".git" / "info").mkdir(exist_ok=True)
        (repo_path / ".git" / "info" / "attributes").write_text(rule + "\n")
    elif where == "attributesFile":
        (tmp_path / "attributes").write_text(rule + "\n")
        git(repo_path, "config", "core.attributesFile", str(tmp_path / "attributes"))
    marker = tmp_path / "filter-ran"
    _configure_filter(repo_path, marker)
    before = _raw_files(repo_path)  # not `git status`: it would run the user's filter
    tip = git(repo_path, "rev-parse", "main")
    repo, ws = _agent_result(repo_path, {"a.dat": "$Id$ v2\n"})
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.BRANCH and needs in result.message
    assert "a.dat" in result.message
    assert not marker.exists()
    assert git(repo_path, "rev-parse", "main") == tip
    assert (repo_path / "a.dat").read_bytes() == b"$Id$ v1\n"
    assert _raw_files(repo_path) == before


def _raw_files(repo_path: Path) -> dict[str, bytes]:
    """The working tree's bytes and the index, read without git."""
    found = {
        p.relative_to(repo_path).as_posix(): p.read_bytes()
        for p in repo_path.rglob("*")
        if p.is_file() and not p.relative_to(repo_path).as_posix().startswith((".git/", ".capataz"))
    }
    found["<index>"] = (repo_path / ".git" / "index").read_bytes()
    return found


def test_text_auto_with_lf_endings_still_lands_byte_exact(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo(files={".gitattributes": "* text=auto\n", "a.txt": "v1\n"})
    repo, ws = _agent_result(repo_path, {"a.txt": "v2\n", "b.txt": "new\n"})
    result = land(repo, ws, "main", "merge")
    assert result.outcome is Outcome.LANDED, result.message
    assert (repo_path / "a.txt").read_bytes() == b"v2\n"
    assert git(repo_path, "status", "--porcelain") == ""


@pytest.mark.parametrize("where", ["info/attributes", ".gitattributes"])
def test_replay_never_runs_a_merge_driver_named_by_attributes(
    make_repo: Callable[..., Path], tmp_path: Path, where: str
) -> None:
    # `* merge=demo` as an earlier result could have left it (landed while main was not
    # checked out), or in info/attributes; the driver is the user's own
    files = {"notes.txt": "one\ntwo\nthree\nfour\nfive\n"}
    if where == ".gitattributes":
        files[".gitattributes"] = "* merge=demo\n"
    repo_path = make_repo(files=files)
    if where == "info/attributes":
        (repo_path / ".git" / "info").mkdir(exist_ok=True)
        (repo_path / ".git" / "info" / "attributes").write_text("* merge=demo\n")
    marker = tmp_path / "driver-ran"
    _configure_filter(repo_path, marker)
    repo, ws = _agent_result(repo_path, {"notes.txt": "one\ntwo\nthree\nfour\nFIVE\n"})
    (repo_path / "notes.txt").write_text("ONE\ntwo\nthree\nfour\nfive\n")
    git(repo_path, "commit", "--quiet", "-am", "human edit")  # the branch moved: a replay
    git(repo_path, "checkout", "--quiet", "-b", "feature")  # main not checked out
    result = land(repo, ws, "main", "merge")
    assert not marker.exists()
    assert result.outcome is Outcome.LANDED and "rebased" in result.message
    assert git(repo_path, "show", "main:notes.txt").split() == [
        "ONE",
        "two",
        "three",
        "four",
        "FIVE",
    ]


def test_replay_into_the_checked_out_branch_runs_no_driver_and_keeps_the_tree(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo(files={"notes.txt": "one\ntwo\nthree\nfour\nfive\n"})
    marker = tmp_path / "driver-ran"
    _configure_filter(repo_path, marker)
    repo, ws = _agent_result(
        repo_path,
        {".gitattributes": "* merge=demo filter=demo\n", "notes.txt": "one\ntwo\nthree\nfour\n5\n"},
    )
    (repo_path / "notes.txt").write_text("ONE\ntwo\nthree\nfour\nfive\n")
    git(repo_path, "commit", "--quiet", "-am", "human edit")
    before = snapshot(repo_path)
    result = land(repo, ws, "main", "merge")
    assert not marker.exists()
    assert result.outcome is Outcome.BRANCH and ".gitattributes" in result.message
    assert {k: v for k, v in snapshot(repo_path).items() if k != "<refs>"} == {
        k: v for k, v in before.items() if k != "<refs>"
    }
