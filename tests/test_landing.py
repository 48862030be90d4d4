from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import git, snapshot

from capataz.landing import land, rollback
from capataz.models import Outcome
from capataz.repo import Repository
from capataz.workspace import Workspace


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


def test_rollback_keeps_the_rejected_commit_and_writes_evidence(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    before = snapshot(repo_path)
    artifacts = tmp_path / "artifacts"
    for attempt in (1, 2):
        repo, ws = _agent_result(repo_path, {"bad.txt": f"attempt {attempt}\n"})
        result = ws.head()
        done = rollback(
            repo, ws, result=result, target="main", reason="blocked", artifacts=artifacts
        )
        assert done.rejected_ref == f"refs/capataz/rejected/t1/{attempt}"
        assert git(repo_path, "rev-parse", done.rejected_ref) == result
        assert not ws.path.exists()
    state = json.loads((artifacts / "rollback-state.json").read_text())
    assert (
        state["tempCommit"] and state["originalBranch"] == "main" and state["reason"] == "blocked"
    )
    assert (artifacts / "rollback-log.txt").read_text().count("rollback of t1") == 2
    assert (
        snapshot(repo_path) == before
    )  # refs/capataz/* are not branches: the user's view is unchanged
