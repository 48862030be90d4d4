"""The sandbox uid when capataz runs as root: one leased per concurrent run, and the
workspace handed over to it before the run starts.

Why a uid per run: RLIMIT_NPROC counts every process of a real uid, so two runs sharing
one would share their process budget (and could signal each other's processes). Why a
handover: the command runs as that uid and must write its workspace; the files it
writes stay that uid's (see capataz.sandbox.bwrap).
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from capataz.errors import SandboxError
from capataz.sandbox.mounts import masks

__all__ = ["UID_BASE", "UID_SPAN", "hand_over", "uid_lease", "unreachable_ancestor"]

UID_BASE = 200_000
UID_SPAN = 100_000


def _lock_dir() -> Path:
    for candidate in (
        Path("/run/capataz/sandbox-uids"),
        Path(tempfile.gettempdir(), "capataz-uids"),
    ):
        try:
            candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = candidate.lstat()
        except OSError:
            continue
        if info.st_uid == os.geteuid() and not candidate.is_symlink():
            return candidate
    raise SandboxError(
        "no private directory for sandbox uid locks (/run/capataz or the temp directory)",
        fix="make /run writable for root, or set [sandbox] uid to a fixed unprivileged uid",
    )


@contextmanager
def uid_lease(fixed: int = 0) -> Iterator[int]:
    """An unprivileged uid no other concurrent run on this machine uses (an flock).

    The lowest free uid is taken, so few lock files ever exist; reusing a uid right away
    is safe because its previous run's processes died with that run's PID namespace.
    """
    if fixed:
        yield fixed
        return
    directory = _lock_dir()
    for uid in range(UID_BASE, UID_BASE + UID_SPAN):
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)
        return
    raise SandboxError("every sandbox uid is in use", fix="set [sandbox] uid explicitly")


def unreachable_ancestor(workspace: Path, hidden: Sequence[Path] = ()) -> Path | None:
    """The first real directory above ``workspace`` the sandbox uid could not traverse.

    Directories under a tmpfs mask (or a hidden path) are recreated 0755 inside the
    sandbox, so only ancestors outside every mask count."""
    mounted = [*masks(), *(str(Path(p).resolve()) for p in hidden)]
    for ancestor in reversed(workspace.parents):
        text = str(ancestor)
        if any(text == m or text.startswith(m + "/") for m in mounted):
            return None
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            return ancestor
    return None


def hand_over(workspace: Path, uid: int, *, skip_git: bool) -> None:
    """Make the workspace the sandbox uid's (lchown: never through a symlink).

    Entries already owned by ``uid`` are skipped, so a second run in the same
    workspace costs only a scan. ``.git`` is left alone when the real git directory is
    mounted over it anyway.
    """
    os.lchown(workspace, uid, uid)
    stack = [str(workspace)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if skip_git and directory == str(workspace) and entry.name == ".git":
                    continue
                info = entry.stat(follow_symlinks=False)
                if info.st_uid != uid or info.st_gid != uid:
                    os.lchown(entry.path, uid, uid)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
