"""An isolated checkout for one task.

Layout under ``.capataz/workspaces/<task-id>/``: ``tree/`` is the only place the agent
may write; ``git/`` is a repository written only by capataz, borrowing the user's objects
read-only through ``objects/info/alternates`` (so creating it copies nothing). The
sandbox shows ``git/`` read-only at ``tree/.git``: the agent can read history but can
never plant hooks or config, and capataz always passes ``--git-dir`` explicitly."""

from __future__ import annotations

import codecs
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from capataz.changes import ChangeSet, FileDiff
from capataz.git import Git
from capataz.models import ChangeKind, FileChange
from capataz.repo import Repository

__all__ = ["Workspace"]

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
NEUTRAL_ATTRIBUTES = "* !filter !diff !merge !ident !working-tree-encoding !text !eol\n"
_KINDS = {"A": ChangeKind.ADDED, "D": ChangeKind.DELETED}


@dataclass(frozen=True)
class Workspace:
    task_id: str
    path: Path
    base: str  # the commit the task started from

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def git_dir(self) -> Path:
        return self.path / "git"

    @property
    def branch(self) -> str:
        return f"capataz/{self.task_id}"

    @property
    def git(self) -> Git:
        return Git(self.git_dir, self.tree)

    @classmethod
    def create(cls, repo: Repository, task_id: str, base: str, root: Path) -> Workspace:
        ws = cls(task_id=task_id, path=root / task_id, base=base)
        if ws.path.exists():
            shutil.rmtree(ws.path)
        ws.tree.mkdir(parents=True)
        Git(ws.git_dir).run("init", "--quiet", "--bare", str(ws.git_dir))
        alternates = ws.git_dir / "objects" / "info" / "alternates"
        alternates.write_text(f"{repo.common_dir / 'objects'}\n")
        # info/attributes outranks every .gitattributes in the tree: an agent's attributes
        # can never select a filter, diff or merge driver for capataz's own git commands.
        (ws.git_dir / "info").mkdir(exist_ok=True)
        (ws.git_dir / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
        git = ws.git
        git.run("config", "core.bare", "false")
        git.run("update-ref", f"refs/heads/{ws.branch}", base)
        git.run("symbolic-ref", "HEAD", f"refs/heads/{ws.branch}")
        git.run("read-tree", "--reset", "-u", "HEAD")
        return ws

    @classmethod
    def existing(cls, task_id: str, root: Path, base: str) -> Workspace:
        return cls(task_id=task_id, path=root / task_id, base=base)

    def head(self) -> str:
        return self.git.out("rev-parse", "HEAD")

    def commit(self, message: str) -> str | None:
        """Commit everything the agent left (respecting .gitignore); None if nothing."""
        self._drop_mount_point()
        git = self.git
        git.run("add", "--all")
        if git.ok("diff", "--cached", "--quiet", "HEAD"):
            return None
        git.run("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        return self.head()

    def changes(self, head: str | None = None) -> ChangeSet:
        head = head or self.head()
        git = self.git
        kinds = _name_status(
            git.out("diff", "--name-status", "-z", "--no-renames", self.base, head)
        )
        counts = _numstat(git.out("diff", "--numstat", "-z", "--no-renames", self.base, head))
        added = _added_lines(
            git.run(
                "diff",
                "--unified=0",
                "--no-renames",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                self.base,
                head,
            ).stdout.decode("utf-8", errors="replace")
        )
        files = []
        for path, kind in kinds:
            plus, minus, binary = counts.get(path, (0, 0, False))
            change = FileChange(
                path=path, kind=kind, lines_added=plus, lines_removed=minus, binary=binary
            )
            files.append(FileDiff(change=change, added=tuple(added.get(path, ()))))
        return ChangeSet(root=self.tree, files=tuple(files))

    def gitlinks(self, head: str) -> list[str]:
        """Paths the agent turned into embedded repositories (mode 160000 entries)."""
        raw = self.git.out("diff", "--raw", "-z", "--no-renames", self.base, head)
        fields = raw.split("\0")
        found = []
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            if meta.startswith(":") and meta.split()[1] == "160000":
                found.append(path)
        return found

    def discard(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def _drop_mount_point(self) -> None:
        """bwrap leaves an empty ``tree/.git`` where it mounted the git dir; remove it."""
        mount_point = self.tree / ".git"
        if mount_point.is_dir() and not mount_point.is_symlink() and not any(mount_point.iterdir()):
            mount_point.rmdir()


def _name_status(out: str) -> list[tuple[str, ChangeKind]]:
    fields = [f for f in out.split("\0") if f]
    return [
        (path, _KINDS.get(status[0], ChangeKind.MODIFIED))
        for status, path in zip(fields[0::2], fields[1::2], strict=False)
    ]


def _numstat(out: str) -> dict[str, tuple[int, int, bool]]:
    counts: dict[str, tuple[int, int, bool]] = {}
    for record in filter(None, out.split("\0")):
        plus, minus, path = record.split("\t", 2)
        binary = plus == "-"
        counts[path] = (0 if binary else int(plus), 0 if binary else int(minus), binary)
    return counts


def _unquote(path: str) -> str:
    if path.startswith('"') and path.endswith('"'):
        raw = codecs.escape_decode(path[1:-1].encode())[0]
        return bytes(raw).decode("utf-8", errors="replace")
    return path


def _added_lines(patch: str) -> dict[str, list[tuple[int, str]]]:
    """Added lines per new path from a ``--unified=0`` patch. File headers are only
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
    return added
