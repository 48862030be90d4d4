"""An agent's persistent cache: ``.capataz/cache/<agent>/`` as its ``$HOME/.cache``.

Why: the sandbox's HOME is an empty tmpfs, so whatever an agent caches there (model
metadata, tokenizer files, package downloads) is fetched again on every run. With
``[agents.X] cache = true`` one host directory per agent, inside capataz's private state
directory, is bind-mounted writable at ``$HOME/.cache`` for each of its runs. It is never
the user's own home or cache.

Trust: the directory is written by the agent, which capataz does not trust, and it
outlives the run. So capataz never runs, imports or parses anything in it; it only walks
it (``lstat``, never following a symbolic link) to size it and, when it runs as root, to
hand it to the run's unprivileged uid. A poisoned cache (a run talked into planting a
malicious file there) therefore affects only later runs of the same agent, inside the
sandbox, with the same limits as any run; other agents have their own directories.
What one task's run leaves there is readable by the agent's later runs for other tasks:
do not enable it for an agent whose tasks must not see each other's data.

Bounds: what a run writes into the cache counts against its ``disk`` limit together with
the workspace (capataz.sandbox.disk), and a cache that has grown beyond ``disk`` is
emptied before the next run, so it never holds more than about twice that.

One run at a time: as root, each run has its own uid and the cache is chowned to it,
which would lock a concurrent run of the same agent out mid-run. So a run takes an
exclusive lock on ``<agent>.lock`` beside the directory; a run that finds it taken goes
without the persistent cache (an empty HOME, as without ``cache``) rather than wait.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from capataz.errors import ConfigError, SandboxError
from capataz.statedir import refuse_symlink, state_dir

__all__ = ["CACHE_NAME", "agent_cache_dir", "cache_mount", "held_cache"]

CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def agent_cache_dir(repo_root: Path, agent: str) -> Path:
    """``.capataz/cache/<agent>/``, created 0700 (its parents too)."""
    if not CACHE_NAME.fullmatch(agent) or ".." in agent:
        raise ConfigError(
            f"agent {agent!r} cannot have a cache: its name is not a safe directory name",
            fix="name the agent with letters, digits, '_', '-' and '.', or set cache = false",
        )
    root = state_dir(repo_root) / "cache"
    path = root / agent
    refuse_symlink(path)
    for directory in (root, path):
        with suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise SandboxError(
                f"{directory} is not a directory", fix=f"remove it ({directory}) and run again"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            directory.chmod(0o700)
    return path


def cache_mount(cache: Path | None, home: str) -> list[str]:
    """bwrap arguments that show ``cache`` writable at ``<home>/.cache`` (after HOME)."""
    if cache is None:
        return []
    return ["--bind", str(cache), f"{home}/.cache"]


@contextmanager
def held_cache(cache: Path | None, *, uid: int | None, limit: int | None) -> Iterator[Path | None]:
    """The cache to mount for one run, held exclusively until the run ends: sized (and
    emptied when over ``limit``), and handed to ``uid`` when capataz runs as root. None
    when there is no cache, or another run holds it."""
    if cache is None:
        yield None
        return
    lock = cache.with_name(f"{cache.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        size = _settle(cache, uid)
        if limit is not None and size > limit:
            _empty(cache)
        if uid is not None:
            os.lchown(cache, uid, uid)
        yield cache
    finally:
        os.close(fd)


def _settle(cache: Path, uid: int | None) -> int:
    """Bytes allocated under ``cache``; with ``uid``, every entry handed to it.

    Never through a symbolic link (lstat, lchown). An entry owned by root or by capataz
    itself is never chowned, nor a file with other hard links: the agent creates
    everything in here as a sandbox uid, so such an entry could only be a link to a file
    from elsewhere, which a chown would give away."""
    keep = {0, os.geteuid()}
    total = 0
    stack = [str(cache)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            is_dir = stat.S_ISDIR(info.st_mode)
            foreign = info.st_uid in keep or (not is_dir and info.st_nlink > 1)
            if uid is not None and not foreign and (info.st_uid, info.st_gid) != (uid, uid):
                with suppress(OSError):
                    os.lchown(entry.path, uid, uid)
            if is_dir:
                stack.append(entry.path)
    return total


def _empty(cache: Path) -> None:
    """Remove everything inside ``cache`` (rmtree never follows symbolic links)."""
    for entry in os.scandir(cache):
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                Path(entry.path).unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise SandboxError(
                    f"cannot empty the agent cache {cache}: {exc}",
                    fix=f"remove {cache} by hand; capataz recreates it",
                ) from exc
