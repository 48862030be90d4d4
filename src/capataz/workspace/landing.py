"""Landing a result on the target branch, and rolling back a rejected one.

Landing happens under a lock in the shared git directory so two capataz processes never
race on one branch. A result whose base is still the branch tip fast-forwards; otherwise
it is replayed on the tip with ``git merge-tree --write-tree`` in the workspace's own
git dir (neutral attributes, no user config: no merge driver an agent names can run).
The run's objects move into the user's store only then, before any ref or index names
them. A branch checked out in one of the user's working trees moves only if that tree
is clean and needs no conversions (see :mod:`capataz.workspace.checkout`); otherwise the result
waits on ``capataz/<task-id>``.

A rolled-back result's objects go to ``.capataz/rejected.git`` (see
:mod:`capataz.workspace.objectstore`), never to the user's store, which later agents can read; a
result that leaked a secret is kept nowhere: only its redacted report remains."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from capataz.errors import GitError
from capataz.models import ChangeKind, Outcome, utcnow
from capataz.redaction import redact, redact_data
from capataz.statedir import STATE_DIR, state_dir
from capataz.workspace.changes import ChangeSet
from capataz.workspace.checkout import update_checkout
from capataz.workspace.git import Git
from capataz.workspace.isolated import Workspace
from capataz.workspace.objectstore import RejectedStore
from capataz.workspace.repo import Repository

__all__ = [
    "FileCommit",
    "LandResult",
    "RollbackResult",
    "commit_file",
    "land",
    "read_at",
    "read_file",
    "rejected_store",
    "rollback",
]


@dataclass(frozen=True)
class LandResult:
    outcome: Outcome  # LANDED or BRANCH
    commit: str  # the commit now on the target branch, or on capataz/<task-id>
    branch: str
    message: str


@dataclass(frozen=True)
class RollbackResult:
    rejected_ref: str | None  # in the rejected store, not the user's repository
    steps: list[str]
    inspect: str | None = None  # the command that shows the rejected commit


def rejected_store(repo: Repository) -> RejectedStore:
    return RejectedStore(repo.root / STATE_DIR / "rejected.git", repo.common_dir / "objects")


@contextmanager
def _landing_lock(repo: Repository) -> Iterator[None]:
    with (repo.common_dir / "capataz-land.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _checkout_git_dir(repo: Repository) -> Path:
    """The private git dir that moves the user's checkout (:mod:`capataz.workspace.checkout`):
    one per repository, kept between landings, used only under the landing lock."""
    path = repo.root / STATE_DIR / "land.git"
    if not path.is_dir():
        state_dir(repo.root)  # private, and ignored by git, before anything is put in it
    return path


def keep_branch(repo: Repository, ws: Workspace) -> str:
    """Point ``capataz/<task-id>`` in the user's repository at the result, after moving
    the run's objects into the user's store."""
    result = ws.head()
    ws.adopt()
    repo.git.run("update-ref", f"refs/heads/{ws.branch}", result)
    return result


def _waiting(repo: Repository, ws: Workspace, why: str) -> LandResult:
    result = keep_branch(repo, ws)
    return LandResult(Outcome.BRANCH, result, ws.branch, f"{why}; left on branch {ws.branch}")


def land(
    repo: Repository, ws: Workspace, target: str, mode: str, changes: ChangeSet | None = None
) -> LandResult:
    """Put the workspace's result on ``target``. ``changes``: the result's diff from
    the workspace's base as collect computed it; when the result fast-forwards the
    branch, that is exactly what the user's checkout must apply, so it is not asked
    of git again."""
    if mode == "branch":
        return _waiting(repo, ws, 'review it first (land = "branch")')
    result = ws.head()
    with _landing_lock(repo):
        old = repo.branch_tip(target)
        new = _replay(ws.git, result, old, ws.base)
        if new is None:
            return _waiting(repo, ws, f"conflicts with {target}")
        ws.adopt()  # before the user's index or a ref names any of it
        worktree = repo.worktree_on(target)
        if worktree is not None:
            fast_forward = new == result and changes is not None and changes.head == result
            known = _status_letters(changes) if fast_forward and changes is not None else None
            refused = update_checkout(worktree, old, new, _checkout_git_dir(repo), known)
            if refused is not None:
                return _waiting(
                    repo,
                    ws,
                    f"{target} is checked out in {worktree.path} and {refused}; merge it "
                    f"yourself when ready (git merge {ws.branch})",
                )
        repo.git.run(
            "update-ref", "-m", f"capataz: land {ws.task_id}", f"refs/heads/{target}", new, old
        )
        if repo.has_ref(f"refs/heads/{ws.branch}"):  # left by an earlier attempt
            repo.git.run("update-ref", "-d", f"refs/heads/{ws.branch}")
    how = "fast-forward" if new == result else "rebased"
    return LandResult(Outcome.LANDED, new, target, f"landed on {target} ({how}) as {new[:12]}")


def _status_letters(changes: ChangeSet) -> list[tuple[str, str]]:
    """(path, status letter) as ``git diff-tree --name-status`` would list them: only
    deletions matter to the checkout (their files are not read), so A, D and M do."""
    letters = {ChangeKind.ADDED: "A", ChangeKind.DELETED: "D"}
    return [(c.path, letters.get(c.kind, "M")) for c in changes.changes]


def read_file(repo: Repository, branch: str, path: str) -> str | None:
    """``path`` (relative to the repository) as committed on ``branch``; None if the
    branch has no such file."""
    return read_at(repo, repo.branch_tip(branch), path)


def read_at(repo: Repository, commit: str, path: str) -> str | None:
    """``path`` (relative to the repository) as committed in ``commit``; None if the
    commit has no such file or it is not UTF-8 text."""
    shown = repo.git.run("show", f"{commit}:{path}", check=False)
    if shown.returncode != 0:
        return None
    try:
        return shown.stdout.decode()
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class FileCommit:
    """What :func:`commit_file` did: ``commit`` is on the branch now, or None with
    ``refused`` saying why the branch was left alone."""

    commit: str | None
    refused: str | None = None


def commit_file(
    repo: Repository,
    branch: str,
    path: str,
    text: str | Callable[[str | None], str],
    message: str,
) -> FileCommit | None:
    """Commit ``text`` as ``path`` on ``branch`` as capataz (one file of capataz's own
    making, such as a PRD with criteria ticked), without touching any checkout but the
    branch's own, which moves like a landing's: only if clean. None when ``text`` is
    what the branch already holds. Under the landing lock, so it never races a result
    landing on the same branch. ``text`` may be a function of the file as the branch
    holds it under that lock (None: no such file), so that an edit is made to the
    branch's latest version, never to one a landing has just replaced; what it raises
    leaves the branch alone and reaches the caller."""
    git = repo.git
    with _landing_lock(repo), TemporaryDirectory(prefix="capataz-commit-") as scratch:
        old = repo.branch_tip(branch)
        if callable(text):
            text = text(read_at(repo, old, path))
        listed = git.out("ls-tree", old, "--", path).split()
        mode = listed[0] if listed else "100644"
        blob = git.run("hash-object", "-w", "--stdin", input_bytes=text.encode())
        blob_id = blob.stdout.decode().strip()
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git.run("read-tree", old, env=index)
        git.run("update-index", "--add", "--cacheinfo", f"{mode},{blob_id},{path}", env=index)
        tree = git.out("write-tree", env=index)
        if tree == git.out("rev-parse", f"{old}^{{tree}}"):
            return None
        new = git.out("commit-tree", tree, "-p", old, "-m", message)
        worktree = repo.worktree_on(branch)
        if worktree is not None:
            refused = update_checkout(worktree, old, new, Path(scratch) / "land.git")
            if refused is not None:
                return FileCommit(None, f"{branch} is checked out in {worktree.path} and {refused}")
        git.run("update-ref", "-m", f"capataz: {message}", f"refs/heads/{branch}", new, old)
    return FileCommit(new)


def _replay(git: Git, result: str, tip: str, base: str) -> str | None:
    """The commit to put on the branch: ``result`` itself, or it replayed onto ``tip``.
    ``git`` is the workspace's: its objects stay there until :meth:`Workspace.adopt`."""
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
    keep: bool = True,
) -> RollbackResult:
    """Discard the workspace and write the evidence. The rejected commit is kept for
    forensics in the rejected store unless ``keep`` is False (it carries a secret):
    then its objects are deleted with the workspace and only the redacted report stays."""
    steps: list[str] = []
    rejected_ref: str | None = None
    inspect: str | None = None
    if result is None:
        steps.append("the agent produced no commit; nothing to keep")
    elif not keep:
        steps.append(f"did not keep rejected commit {result[:12]}: it carries a secret")
    else:
        store = rejected_store(repo)
        try:
            rejected_ref = store.keep(ws.own_objects, ws.task_id, result)
            inspect = store.inspect_command(rejected_ref, repo.root)
            steps.append(f"kept rejected commit {result[:12]} as {rejected_ref} ({inspect})")
        except (GitError, OSError) as exc:
            steps.append(f"could not keep rejected commit {result[:12]}: {exc}")
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
        "rejectedStore": str(rejected_store(repo).path) if rejected_ref else None,
        "inspect": inspect,
        "reason": reason,
        "timestamp": utcnow().isoformat(),
        "steps": steps,
    }
    done = RollbackResult(rejected_ref=rejected_ref, steps=steps, inspect=inspect)
    if artifacts is None:  # the evidence directory belongs to a newer attempt now
        return done
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "rollback-state.json").write_text(json.dumps(redact_data(state), indent=2) + "\n")
    with (artifacts / "rollback-log.txt").open("a", encoding="utf-8") as log:
        log.write(redact(f"{state['timestamp']} rollback of {ws.task_id}: {reason}\n"))
        log.writelines(f"  - {redact(step)}\n" for step in steps)
    return done
