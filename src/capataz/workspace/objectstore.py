"""Where the objects of a result live, and the store rejected results go to.

A workspace writes its objects into its own git directory (``objects/``, borrowing the
user's store through alternates), never into the user's store: every later sandbox
mounts the user's objects read-only, so anything written there is readable by every
future agent. Objects reach the user's store only when a result lands or is kept on a
branch (:func:`move_objects`, renames on one filesystem: cost is per file, not per
byte). A rejected result's objects go to :class:`RejectedStore`, a bare repository at
``.capataz/rejected.git`` under the repository root, which every sandbox hides; a
result rejected for leaking a secret is kept nowhere."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from capataz.errors import GitError
from capataz.workspace.git import NEUTRAL_ATTRIBUTES, Git

__all__ = ["RejectedRef", "RejectedStore", "directory_bytes", "move_objects"]

_FANOUT = re.compile(r"^[0-9a-f]{2}$")
_LOOSE = re.compile(r"^[0-9a-f]{38}(?:[0-9a-f]{24})?$")
REJECTED_PREFIX = "refs/capataz/rejected"


def move_objects(source: Path, target: Path) -> int:
    """Move every object under ``source`` (an ``objects/`` directory) into ``target``;
    returns the bytes moved. Packs first (``.idx`` last: readers find a pack by its
    index), then loose objects; an object already in ``target`` is simply dropped
    (objects are named by their content)."""
    moved = 0
    packs = source / "pack"
    if packs.is_dir():
        for pack in sorted(packs.glob("pack-*.pack")):
            if not pack.with_suffix(".idx").exists():
                continue  # half-written: not an object of this store yet
            (target / "pack").mkdir(parents=True, exist_ok=True)
            for suffix in (".pack", ".rev", ".idx"):
                part = pack.with_suffix(suffix)
                if part.exists():
                    moved += _move(part, target / "pack" / part.name)
    if not source.is_dir():
        return moved
    with os.scandir(source) as fanouts:
        for fanout in fanouts:
            if not _FANOUT.match(fanout.name) or not fanout.is_dir(follow_symlinks=False):
                continue
            with os.scandir(fanout.path) as entries:
                names = [e.name for e in entries if _LOOSE.match(e.name)]
            if names:
                (target / fanout.name).mkdir(exist_ok=True)
            for name in names:
                destination = target / fanout.name / name
                if destination.exists():
                    Path(fanout.path, name).unlink()
                else:
                    moved += _move(Path(fanout.path, name), destination)
    return moved


def _move(source: Path, target: Path) -> int:
    """Rename; across filesystems, copy beside the target and rename into place, so a
    reader never sees half an object."""
    size = source.stat().st_size
    try:
        source.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copy2(source, partial)
        partial.replace(target)
        source.unlink()
    return size


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files below ``path`` (0 if it does not exist)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


@dataclass(frozen=True)
class RejectedRef:
    ref: str
    commit: str
    rejected_at: float  # seconds since the epoch


@dataclass(frozen=True)
class RejectedStore:
    """``.capataz/rejected.git``: rejected results for humans to inspect, out of every
    sandbox's sight. Its alternates point at the user's store (a result's parents live
    there), so it holds only what the rejected results added."""

    path: Path
    alternate: Path  # the user's objects/

    @property
    def git(self) -> Git:
        return Git(self.path)

    @property
    def objects(self) -> Path:
        return self.path / "objects"

    def inspect_command(self, ref: str, root: Path) -> str:
        where = os.path.relpath(self.path, root) if self.path.is_relative_to(root) else self.path
        return f"git --git-dir {where} show {ref}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Keeping a result (move, then ref) and pruning exclude each other: a prune
        between the two would delete the objects of a result being kept."""
        self._ensure()
        with (self.path / "capataz.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ensure(self) -> None:
        """Written by hand like the workspace's git dir (no git process); rewritten
        each time so the alternates follow a repository that was moved."""
        for sub in ("objects/info", "refs/heads", "refs/tags", "info"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        files = {
            "HEAD": "ref: refs/heads/main\n",
            "config": "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
            "objects/info/alternates": f"{self.alternate}\n",
            "info/attributes": NEUTRAL_ATTRIBUTES,
        }
        for name, text in files.items():
            path = self.path / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def keep(self, objects: Path, task_id: str, commit: str) -> str:
        """Move ``objects`` (a workspace's) here and name ``commit`` with the next free
        ``refs/capataz/rejected/<task-id>/<n>``."""
        with self.locked():
            move_objects(objects, self.objects)
            for _ in range(5):
                ref = f"{REJECTED_PREFIX}/{task_id}/{self._next_attempt(task_id)}"
                done = self.git.run("update-ref", ref, commit, "", check=False)
                if done.returncode == 0:
                    return ref
            raise GitError(f"could not name rejected commit {commit[:12]} in {self.path}")

    def _next_attempt(self, task_id: str) -> int:
        folder = self.path / REJECTED_PREFIX / task_id  # capataz never packs these refs
        numbers = [int(p.name) for p in folder.glob("*") if p.name.isdigit()]
        return max(numbers, default=0) + 1

    def refs(self) -> list[RejectedRef]:
        """Every rejected result, dated by its ref file (written when it was rejected;
        capataz never packs these refs), else by its commit."""
        if not (self.path / "HEAD").exists():
            return []
        fields = "--format=%(refname) %(objectname) %(committerdate:unix)"
        out = self.git.out("for-each-ref", fields, REJECTED_PREFIX)
        found = []
        for line in out.splitlines():
            ref, commit, when = line.split(" ")
            try:
                rejected_at = (self.path / ref).stat().st_mtime
            except OSError:
                rejected_at = float(when or 0)
            found.append(RejectedRef(ref, commit, rejected_at))
        return found

    def drop(self, refs: list[RejectedRef]) -> None:
        """Delete ``refs`` and every object no remaining rejected ref reaches."""
        with self.locked():
            for item in refs:
                self.git.run("update-ref", "-d", item.ref, item.commit, check=False)
            if not self.refs():  # nothing left to keep: no need to ask git what is reachable
                for child in self.objects.iterdir():
                    if child.name != "info":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                return
            self.git.run("repack", "-a", "-d", "-l", "-q")
            self.git.run("prune", "--expire=now")
