"""The ``disk`` limit: how much a run may write into its workspace, checked while it runs.

Why a watcher: the workspace is a real directory on the host's disk, so no tmpfs cap
and no cgroup bounds it, and ``file_size`` (RLIMIT_FSIZE) bounds one file, not the
sum: 640 files of 1 MiB pass a 100 MiB ``file_size``. A filesystem quota would need
root and a quota-enabled filesystem; a scan needs neither.

What counts: the allocated blocks (``st_blocks``, so sparse files count what they
really use) of every file and directory whose ctime is later than the start of the
run, i.e. created or changed by it (ctime cannot be set backwards by anyone but the
kernel); each inode once (hard links), symlinks never followed, other filesystems
never entered. A pre-existing file the run appends to counts whole: conservative.

Cost: the first scan comes after a short delay (a trivial run is over before it), then
periodically, and never more often than ten times the last scan's duration, so a
huge workspace costs at most a tenth of a core. Because a fast run could write
everything between two scans, the caller scans once more after the run
(:meth:`DiskWatch.exceeded`): that scan of a small workspace is a fraction of a
millisecond.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

__all__ = ["DiskWatch", "written_since"]

_FIRST_CHECK = 0.2  # seconds after the start
_INTERVAL = 0.5  # between checks, at least
_MAX_SHARE = 10  # the interval is at least this many times the last scan's duration


def written_since(root: Path, since_ns: int, *, skip_top: frozenset[str] = frozenset()) -> int:
    """Bytes allocated under ``root`` to entries changed after ``since_ns`` (ctime)."""
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return 0
    seen: set[int] = set()
    total = 0
    stack = [str(root)]
    top = str(root)
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed or unreadable meanwhile: nothing to count there
            continue
        for entry in entries:
            if directory == top and entry.name in skip_top:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device:
                continue
            if info.st_ctime_ns > since_ns and info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
    return total


class DiskWatch:
    """Periodic checks of one run's workspace (and ``also``, the agent's persistent
    cache, see capataz.sandbox.cache) against its ``disk`` limit."""

    def __init__(
        self,
        root: Path,
        limit: int,
        *,
        skip_top: frozenset[str] = frozenset(),
        also: Path | None = None,
    ) -> None:
        self.root = root
        self.limit = limit
        self.skip_top = skip_top
        self.also = also
        self.since_ns = time.time_ns()
        started = time.monotonic()
        self.next_check = started + _FIRST_CHECK
        self.written = 0

    def exceeded(self) -> bool:
        """Scan now; True once the run has written more than its limit."""
        started = time.monotonic()
        self.written = written_since(self.root, self.since_ns, skip_top=self.skip_top)
        if self.also is not None:
            self.written += written_since(self.also, self.since_ns)
        took = time.monotonic() - started
        self.next_check = time.monotonic() + max(_INTERVAL, took * _MAX_SHARE)
        return self.written > self.limit

    def due(self, now: float) -> bool:
        return now >= self.next_check
