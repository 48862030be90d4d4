"""Landing a result on the target branch, and rolling back a rejected one.

Landing happens under a lock in the shared git directory so two capataz processes never
race on one branch. A result whose base is still the branch tip fast-forwards; otherwise
it is replayed on the tip with ``git merge-tree --write-tree`` (no working tree needed).
A branch checked out in one of the user's working trees moves only if that tree is
clean; otherwise the result waits on ``capataz/<task-id>``."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from capataz.errors import GitError
from capataz.git import Git
from capataz.models import Outcome, utcnow
from capataz.redaction import redact, redact_data
from capataz.repo import Repository
from capataz.workspace import Workspace

__all__ = ["LandResult", "RollbackResult", "land", "rollback"]


@dataclass(frozen=True)
class LandResult:
    outcome: Outcome  # LANDED or BRANCH
    commit: str  # the commit now on the target branch, or on capataz/<task-id>
    branch: str
    message: str


@dataclass(frozen=True)
class RollbackResult:
    rejected_ref: str | None
    steps: list[str]


@contextmanager
def _landing_lock(repo: Repository) -> Iterator[None]:
    with (repo.common_dir / "capataz-land.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def keep_branch(repo: Repository, ws: Workspace) -> str:
    """Point ``capataz/<task-id>`` in the user's repository at the result (its objects
    are already in the user's store: the workspace writes there)."""
    result = ws.head()
    repo.git.run("update-ref", f"refs/heads/{ws.branch}", result)
    return result


def land(repo: Repository, ws: Workspace, target: str, mode: str) -> LandResult:
    result = ws.head()
    if mode == "branch":
        keep_branch(repo, ws)
        return LandResult(
            Outcome.BRANCH,
            result,
            ws.branch,
            f'left on branch {ws.branch} for review (land = "branch")',
        )
    with _landing_lock(repo):
        old = repo.branch_tip(target)
        new = _replay(repo.git, result, old, ws.base)
        if new is None:
            keep_branch(repo, ws)
            return LandResult(
                Outcome.BRANCH,
                result,
                ws.branch,
                f"conflicts with {target}; left on branch {ws.branch}",
            )
        worktree = repo.worktree_on(target)
        if worktree is not None:
            tree_git = Git(worktree.git_dir, worktree.path)
            dirty = tree_git.run("status", "--porcelain", "--untracked-files=no", check=False)
            if dirty.returncode != 0 or dirty.stdout.strip():
                keep_branch(repo, ws)
                return LandResult(
                    Outcome.BRANCH,
                    result,
                    ws.branch,
                    f"{target} is checked out in {worktree.path} with uncommitted changes; "
                    f"left on branch {ws.branch} (merge it when your tree is clean)",
                )
            moved = tree_git.run("read-tree", "-m", "-u", old, new, check=False)
            if moved.returncode != 0:
                keep_branch(repo, ws)
                return LandResult(
                    Outcome.BRANCH,
                    result,
                    ws.branch,
                    f"updating {worktree.path} would overwrite untracked files; "
                    f"left on branch {ws.branch}",
                )
        repo.git.run(
            "update-ref", "-m", f"capataz: land {ws.task_id}", f"refs/heads/{target}", new, old
        )
        if repo.has_ref(f"refs/heads/{ws.branch}"):  # left by an earlier attempt
            repo.git.run("update-ref", "-d", f"refs/heads/{ws.branch}")
    how = "fast-forward" if new == result else "rebased"
    return LandResult(Outcome.LANDED, new, target, f"landed on {target} ({how}) as {new[:12]}")


def _replay(git: Git, result: str, tip: str, base: str) -> str | None:
    """The commit to put on the branch: ``result`` itself, or it replayed onto ``tip``."""
    if tip == base:
        return result
    merged = git.run("merge-tree", "--write-tree", "--no-messages", tip, result, check=False)
    if merged.returncode != 0:
        return None
    tree = merged.stdout.decode().split("\n", 1)[0].strip()
    info = git.out("show", "-s", "--format=%an%x00%ae%x00%aI%x00%B", result).split("\0", 3)
    env = {"GIT_AUTHOR_NAME": info[0], "GIT_AUTHOR_EMAIL": info[1], "GIT_AUTHOR_DATE": info[2]}
    return (
        git.run("commit-tree", tree, "-p", tip, "-m", info[3].strip() or "capataz result", env=env)
        .stdout.decode()
        .strip()
    )


def rollback(
    repo: Repository,
    ws: Workspace,
    *,
    result: str | None,
    target: str,
    reason: str,
    artifacts: Path | None,
) -> RollbackResult:
    """Discard the workspace, keep the rejected commit for forensics, write the evidence."""
    steps: list[str] = []
    rejected_ref: str | None = None
    if result is not None:
        attempt = _next_attempt(repo, ws.task_id)
        rejected_ref = f"refs/capataz/rejected/{ws.task_id}/{attempt}"
        try:
            repo.git.run("update-ref", rejected_ref, result)
            steps.append(f"kept rejected commit {result[:12]} as {rejected_ref}")
        except GitError as exc:
            rejected_ref = None
            steps.append(f"could not keep rejected commit {result[:12]}: {exc}")
    else:
        steps.append("the agent produced no commit; nothing to keep")
    if result is not None and repo.git.rev(f"refs/heads/{ws.branch}") == result:
        repo.git.run("update-ref", "-d", f"refs/heads/{ws.branch}", result)
        steps.append(f"deleted branch {ws.branch}")
    ws.discard()
    steps.append(f"discarded workspace {ws.path}")
    tip = repo.git.rev(f"refs/heads/{target}")
    steps.append(f"target branch {target} untouched at {tip[:12] if tip else '(missing)'}")
    state = {
        "taskId": ws.task_id,
        "originalCommit": ws.base,
        "originalBranch": target,
        "tempCommit": result,
        "rejectedRef": rejected_ref,
        "reason": reason,
        "timestamp": utcnow().isoformat(),
        "steps": steps,
    }
    if artifacts is None:  # the evidence directory belongs to a newer attempt now
        return RollbackResult(rejected_ref=rejected_ref, steps=steps)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "rollback-state.json").write_text(json.dumps(redact_data(state), indent=2) + "\n")
    with (artifacts / "rollback-log.txt").open("a", encoding="utf-8") as log:
        log.write(redact(f"{state['timestamp']} rollback of {ws.task_id}: {reason}\n"))
        log.writelines(f"  - {redact(step)}\n" for step in steps)
    return RollbackResult(rejected_ref=rejected_ref, steps=steps)


def _next_attempt(repo: Repository, task_id: str) -> int:
    out = repo.git.out("for-each-ref", "--format=%(refname)", f"refs/capataz/rejected/{task_id}/")
    numbers = [
        int(ref.rsplit("/", 1)[1]) for ref in out.splitlines() if ref.rsplit("/", 1)[1].isdigit()
    ]
    return max(numbers, default=0) + 1
