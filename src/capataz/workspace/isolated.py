"""An isolated checkout for one task.

Layout under ``.capataz/workspaces/<task-id>/``: ``tree/`` is the only place the agent
may write; ``git/`` is a repository written only by capataz. It borrows the user's
objects read-only through ``objects/info/alternates`` (creating it copies nothing) and
writes new objects into its own ``objects/``: nothing a run produces reaches the user's
store, which every later sandbox can read, unless the result lands or is kept on a
branch (:meth:`Workspace.adopt`). The sandbox shows ``git/`` read-only at
``tree/.git``: the agent can read history but can never plant hooks or config, and
capataz always passes ``--git-dir`` explicitly. While a run uses a workspace it holds a
shared lock on ``<name>.lock`` beside it, so `capataz gc` never deletes it."""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import shutil
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from capataz.models import ChangeKind, FileChange
from capataz.statedir import refuse_symlink
from capataz.workspace.changes import ChangeSet, FileDiff
from capataz.workspace.git import NEUTRAL_ATTRIBUTES, Git
from capataz.workspace.objectstore import move_objects
from capataz.workspace.repo import Repository

__all__ = ["NEUTRAL_ATTRIBUTES", "Workspace", "lock_path"]

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_KINDS = {"A": ChangeKind.ADDED, "D": ChangeKind.DELETED}
# Locks held by this process on the workspaces it uses, released by discard(); one kept
# for a human's edits stays held until the process exits (gc spares it either way).
_HELD: dict[Path, TextIO] = {}
_HELD_LOCK = threading.Lock()


def lock_path(path: Path) -> Path:
    """The lock file of the workspace at ``path``: beside it, so deleting a workspace
    and taking its lock never race on one directory."""
    return path.with_name(f"{path.name}.lock")


def _hold(path: Path) -> None:
    """Take a shared lock on the workspace's lock file (gc needs an exclusive one). A
    file gc unlinked between our open and our lock is opened again."""
    lock = lock_path(path)
    while True:
        handle = lock.open("a")
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            if os.fstat(handle.fileno()).st_ino == lock.stat().st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    with _HELD_LOCK:
        previous = _HELD.pop(path, None)
        _HELD[path] = handle
    if previous is not None:
        previous.close()


def _release(path: Path) -> None:
    with _HELD_LOCK:
        handle = _HELD.pop(path, None)
    if handle is not None:
        handle.close()


@dataclass(frozen=True)
class Workspace:
    task_id: str
    path: Path
    base: str  # the commit the task started from
    objects: Path  # the user's object store, borrowed read-only through alternates

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def git_dir(self) -> Path:
        return self.path / "git"

    @property
    def own_objects(self) -> Path:
        """Where this workspace's git writes: the run's new objects, and only those."""
        return self.git_dir / "objects"

    @property
    def branch(self) -> str:
        return f"capataz/{self.task_id}"

    @property
    def git(self) -> Git:
        return Git(self.git_dir, self.tree)

    def adopt(self) -> int:
        """Move this run's objects into the user's store (before any ref or index of the
        user's names them); bytes moved. Renames: cheap whatever the size."""
        return move_objects(self.own_objects, self.objects)

    @classmethod
    def create(
        cls, repo: Repository, task_id: str, base: str, root: Path, name: str | None = None
    ) -> Workspace:
        """Write the git directory by hand (it is four small files) and check out once:
        one git process instead of five keeps per-task overhead low. ``name`` (default:
        the task id) lets two attempts of one task — a rescued one and a runner that was
        presumed dead — never share a tree."""
        ws = cls.existing(repo, task_id, root, base, name)
        refuse_symlink(ws.path)
        root.mkdir(parents=True, exist_ok=True)
        _hold(ws.path)
        if ws.path.exists():
            shutil.rmtree(ws.path)
        ws.path.mkdir()
        ws.tree.mkdir()
        git_dir = ws.git_dir
        # Parents first, one mkdir each (no failed attempt up the path): git needs
        # objects/ and refs/ to call this a repository, and nothing else of the layout.
        for sub in ("", "objects", "objects/info", "refs", "refs/heads", "refs/heads/capataz"):
            (git_dir / sub).mkdir()
        (git_dir / "info").mkdir()
        (git_dir / "HEAD").write_text(f"ref: refs/heads/{ws.branch}\n")
        # No reflog: nobody reads a workspace's, and it is four directories and two files
        # to make and delete per run.
        (git_dir / "config").write_text(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
            "\tlogAllRefUpdates = false\n"
        )
        (git_dir / "refs" / "heads" / ws.branch).write_text(f"{base}\n")
        (git_dir / "objects" / "info" / "alternates").write_text(f"{ws.objects}\n")
        # info/attributes outranks every .gitattributes in the tree: an agent's attributes
        # can never select a filter, diff or merge driver for capataz's own git commands.
        (git_dir / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
        ws.git.run("read-tree", "--reset", "-u", "HEAD")
        return ws

    @classmethod
    def existing(
        cls, repo: Repository, task_id: str, root: Path, base: str, name: str | None = None
    ) -> Workspace:
        return cls(
            task_id=task_id,
            path=root / (name or task_id),
            base=base,
            objects=repo.common_dir / "objects",
        )

    def head(self) -> str:
        """The workspace branch tip, read from its ref file (capataz never packs refs)."""
        return (self.git_dir / "refs" / "heads" / self.branch).read_text().strip()

    def commit(self, message: str) -> str | None:
        """Commit everything the agent left (respecting .gitignore); None if nothing."""
        self._drop_mount_point()
        git = self.git
        git.run("add", "--all")
        done = git.run(
            "commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, check=False
        )
        if done.returncode != 0:
            if git.ok("diff", "--cached", "--quiet", "HEAD"):
                return None
            git.run("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        return self.head()

    def leave_out(self, exclude: Callable[[str], bool]) -> list[str]:
        """Undo the agent's changes to the paths ``exclude`` matches (its own state
        files), before :meth:`commit`; returns those paths.

        An excluded path is simply not part of the result: a new file is deleted from
        the tree, a tracked one the agent changed or deleted is restored to its base
        version. So the post-gates see exactly what lands, nothing rides along under an
        ignored name, and a run that changed only such paths commits nothing."""
        self._drop_mount_point()
        git = self.git
        git.run("add", "--all")
        listing = git.run("diff", "--cached", "--name-status", "-z", "--no-renames", "HEAD")
        fields = os.fsdecode(listing.stdout).split("\0")
        added: list[str] = []
        tracked: list[str] = []
        for status, path in zip(fields[0::2], fields[1::2], strict=False):
            if path and exclude(path):
                (added if status.startswith("A") else tracked).append(path)
        if not added and not tracked:
            return []
        literal = {"GIT_LITERAL_PATHSPECS": "1"}
        paths = os.fsencode("\0".join([*added, *tracked]))
        git.run(
            "reset",
            "-q",
            "HEAD",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            input_bytes=paths,
            env=literal,
        )
        if tracked:  # back to the base version in the tree too
            git.run(
                "checkout-index",
                "-f",
                "-z",
                "--stdin",
                input_bytes=os.fsencode("\0".join(tracked)),
                env=literal,
            )
        for path in added:
            target = self.tree / path
            with suppress(FileNotFoundError, NotADirectoryError):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        return sorted([*added, *tracked])

    def changes(self, head: str | None = None) -> ChangeSet:
        """One git call: raw + numstat (kinds, modes, counts) and the patch (kept whole
        for people: the run record, the panel, escalations) come out of one ``git diff``,
        the NUL-separated listing first, then an empty field, then the patch exactly as
        a separate ``git diff`` would print it (one process fewer per run)."""
        head = head or self.head()
        out = self.git.run(
            "diff",
            "-z",
            "--raw",
            "--numstat",
            "--patch",
            "--unified=3",
            "--no-renames",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            self.base,
            head,
        ).stdout
        listing, patch = _split_listing(out)
        kinds, counts, gitlinks = _parse_listing(listing)
        added = _added_lines(patch)
        files = []
        for path, kind in kinds:
            plus, minus, binary = counts.get(path, (0, 0, False))
            change = FileChange(
                path=path, kind=kind, lines_added=plus, lines_removed=minus, binary=binary
            )
            files.append(FileDiff(change=change, added=tuple(added.get(path, ()))))
        return ChangeSet(
            root=self.tree, files=tuple(files), gitlinks=tuple(gitlinks), patch=patch, head=head
        )

    def remove_nested_git(self) -> list[str]:
        """Delete every ``.git`` below the tree's root (files, directories, FIFOs) before
        capataz's own ``git add``, which would otherwise open them as repositories:
        a planted gitdir pointer reads another repository on the host, a FIFO named
        HEAD blocks git forever. Returns the paths removed (evidence for a violation)."""
        removed: list[str] = []
        stack = [self.tree]
        while stack:
            directory = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name == ".git" and directory != self.tree:
                        removed.append(Path(entry.path).relative_to(self.tree).as_posix())
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path)
                        else:
                            Path(entry.path).unlink()
                    elif entry.is_dir(follow_symlinks=False) and not (
                        directory == self.tree and entry.name == ".git"
                    ):
                        stack.append(Path(entry.path))
        return sorted(removed)

    def discard(self) -> None:
        """Delete the workspace (and with it every object the run wrote that was not
        adopted or kept), then release its lock."""
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        with _HELD_LOCK:
            held = self.path in _HELD
        if held:  # ours: nobody else may hold it (gc takes it exclusively)
            lock_path(self.path).unlink(missing_ok=True)
        _release(self.path)

    def _drop_mount_point(self) -> None:
        """bwrap leaves an empty ``tree/.git`` where it mounted the git dir; remove it."""
        mount_point = self.tree / ".git"
        if mount_point.is_dir() and not mount_point.is_symlink() and not any(mount_point.iterdir()):
            mount_point.rmdir()


def _split_listing(out: bytes) -> tuple[str, str]:
    """Split ``git diff -z --raw --numstat --patch`` into the listing and the patch. No
    raw or numstat field is ever empty, so the first empty field (two NULs in a row)
    is the separator git puts before the patch; none means there is no patch."""
    cut = out.find(b"\0\0")
    if cut < 0:
        return out.decode(errors="replace").strip(), ""
    listing = out[: cut + 1].decode(errors="replace").strip()
    return listing, out[cut + 2 :].decode("utf-8", errors="replace")


def _parse_listing(
    out: str,
) -> tuple[list[tuple[str, ChangeKind]], dict[str, tuple[int, int, bool]], list[str]]:
    """Parse ``git diff -z --raw --numstat``: raw records (``:mode mode sha sha S``, path)
    come first, then numstat records (``added<TAB>removed<TAB>path``)."""
    fields = out.split("\0")
    kinds: list[tuple[str, ChangeKind]] = []
    counts: dict[str, tuple[int, int, bool]] = {}
    gitlinks: list[str] = []
    index = 0
    while index < len(fields):
        field = fields[index]
        if field.startswith(":"):
            meta, path = field.split(), fields[index + 1]
            kinds.append((path, _KINDS.get(meta[4][0], ChangeKind.MODIFIED)))
            if meta[1] == "160000":
                gitlinks.append(path)
            index += 2
            continue
        if field.count("\t") >= 2:
            plus, minus, path = field.split("\t", 2)
            binary = plus == "-"
            counts[path] = (0 if binary else int(plus), 0 if binary else int(minus), binary)
        index += 1
    return kinds, counts, gitlinks


def _unquote(path: str) -> str:
    if path.startswith('"') and path.endswith('"'):
        raw = codecs.escape_decode(path[1:-1].encode())[0]
        return bytes(raw).decode("utf-8", errors="replace")
    return path


def _added_lines(patch: str) -> dict[str, list[tuple[int, str]]]:
    """Added lines per new path from a unified patch. File headers are only
    recognised between ``diff --git`` and the first hunk, so an added line that itself
    starts with ``++`` is never mistaken for one."""
    added: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    number = 0
    in_header = False
    for line in patch.split("\n"):
        if line.startswith("diff --git "):
            in_header, current = True, None
        elif in_header and line.startswith("+++ "):
            target = _unquote(line[4:].rstrip("\t"))  # git adds a tab after names with spaces
            current = None if target == "/dev/null" else added.setdefault(target[2:], [])
        elif line.startswith("@@"):
            in_header = False
            match = _HUNK.match(line)
            number = int(match.group(1)) if match else 0
        elif not in_header and line.startswith("+") and current is not None:
            current.append((number, line[1:]))
            number += 1
        elif not in_header and line.startswith(" "):
            number += 1  # a context line
    return added
