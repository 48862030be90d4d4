"""The supervisor both backends share: spawn, limit, stream, time out, kill, account.

One command tree per call. The tree gets its own session (so one ``killpg`` reaches
everything that did not deliberately leave it), rlimits set before the command runs
(between fork and exec here, or by bwrap's init: setting them from the parent after
spawn would race with the command's first fork), stdin from /dev/null (an agent
waiting for a human on stdin would only ever look hung) and an environment built from
scratch (the runner's own variables, tokens included, must not leak into an agent).

Output is read from both pipes with a selector, never with threads: a flooding
command must never block on a full pipe, so reading continues past ``max_output``;
only the delivery to ``on_output`` stops. Exit is noticed through a pidfd, so a
trivial command costs no polling delay.
"""

from __future__ import annotations

import math
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capataz.config import Limits
from capataz.sandbox.base import ExecOutcome, OutputSink
from capataz.sandbox.disk import DiskWatch
from capataz.sandbox.outcome import Supervised, limit_list
from capataz.sandbox.output import LineSplitter

__all__ = [
    "BASE_ENV",
    "clean_env",
    "processes_in_use",
    "rlimits_for",
    "supervise",
    "supervise_spawned",
]

# What every command sees, whatever the backend. LC_ALL pins tools' messages and
# sorting so gates behave the same on every machine; TERM=dumb keeps colour codes and
# pagers out of the logs.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "dumb",
    "USER": "capataz",
}

_READ_SIZE = 256 * 1024
_POLL_STOP = 0.1  # how often should_stop() is asked
_POLL_EXIT = 0.01  # exit polling when the kernel offers no pidfd
_DRAIN_GRACE = 1.0  # how long output may stay open after the command tree was killed
_MAX_SIDE = 1024 * 1024  # of the leftover report: kept bounded whatever the tree writes


def clean_env(home: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a sandboxed command: the fixed base, its HOME, then ``extra``."""
    return {**BASE_ENV, "HOME": home, **extra}


def rlimits_for(limits: Limits, *, processes: int | None) -> list[tuple[int, int, int]]:
    """``(resource, soft, hard)`` triples for the child, clamped to what we may set.

    ``processes`` is passed separately because RLIMIT_NPROC counts every process of the
    real uid, not of this tree: the backend knows what number makes it mean "this many
    for the command". The CPU hard limit sits one second above the soft one so the
    command first gets SIGXCPU (a recognisable death) and SIGKILL only if it ignores it.
    """
    wanted: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    if limits.memory is not None:
        wanted.append((resource.RLIMIT_AS, limits.memory, limits.memory))
    if limits.cpu is not None:
        seconds = max(1, math.ceil(limits.cpu))
        wanted.append((resource.RLIMIT_CPU, seconds, seconds + 1))
    if processes is not None:
        wanted.append((resource.RLIMIT_NPROC, processes, processes))
    if limits.file_size is not None:
        wanted.append((resource.RLIMIT_FSIZE, limits.file_size, limits.file_size))
    if limits.open_files is not None:
        wanted.append((resource.RLIMIT_NOFILE, limits.open_files, limits.open_files))
    clamped: list[tuple[int, int, int]] = []
    for which, soft, hard in wanted:
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:  # an unprivileged child cannot raise it
            clamped.append((which, min(soft, hard, current_hard), min(hard, current_hard)))
        else:
            clamped.append((which, soft, hard))
    return clamped


def processes_in_use(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) the given real uid runs now.

    An unprivileged caller's sandbox shares its uid, so a limit of N must be granted on
    top of what the user already runs (a desktop session easily has hundreds).
    """
    count = 0
    with suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                count += sum(1 for _ in Path(f"/proc/{entry.name}/task").iterdir())
            except OSError:  # it exited while we looked
                continue
    return count


def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limits: Limits,
    on_output: OutputSink,
    should_stop: Callable[[], bool] | None = None,
    processes: int | None = None,
    disk: DiskWatch | None = None,
) -> Supervised:
    """Run ``argv`` in ``cwd`` with the rlimits applied between fork and exec.

    This costs a full fork of the Python process (``preexec_fn`` rules out vfork),
    a few milliseconds; :func:`supervise_spawned` is the fast path for a command that
    sets its own limits. Raises OSError when ``argv`` cannot be started at all.
    """
    rlimits = rlimits_for(limits, processes=processes)

    def apply_limits() -> None:  # runs between fork and exec: plain syscalls only
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))

    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        close_fds=True,
        start_new_session=True,
        preexec_fn=apply_limits,  # noqa: PLW1509  (no locks taken; see docstring)
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        watch = _Watch(proc.pid, started, limits, on_output, should_stop, disk=disk)
        return watch.run(proc.stdout.fileno(), proc.stderr.fileno(), None)
    finally:
        proc.returncode = proc.returncode if proc.returncode is not None else -1
        proc.stdout.close()
        proc.stderr.close()


def supervise_spawned(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    limits: Limits,
    on_output: OutputSink,
    should_stop: Callable[[], bool] | None = None,
    report_fd: int | None = None,
    side_fd: int | None = None,
    pass_fds: Sequence[int] = (),
    disk: DiskWatch | None = None,
) -> Supervised:
    """Start ``argv`` with posix_spawn (vfork-fast) for a command that limits itself.

    No rlimits are applied here: the command (bwrap's init) must set them before it
    starts anything untrusted. ``report_fd`` becomes fd 3 of the child (a POSIX shell
    can only name fds 0-9) and is closed here; ``side_fd``, the read end of that pipe, is
    read alongside the output, so a long report cannot block its writer, and closed
    here. Inheritable descriptors of this process are closed in the child: nothing of
    capataz's leaks into the command by accident, except ``pass_fds`` (inheritable, kept
    at their numbers: secrets bwrap copies into the sandbox; the caller closes them).
    ``disk``, when given, is checked now and then while the command runs (see
    capataz.sandbox.disk). Raises OSError when ``argv`` cannot be started at all.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    ours = {out_read, out_write, err_read, err_write}
    if report_fd is not None:
        ours.add(report_fd)
        if report_fd == 3:  # dup2 onto itself would keep close-on-exec set
            report_fd = os.dup(report_fd)
            ours.add(report_fd)
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_CLOSE, fd)
        for fd in _inheritable_fds()
        if fd > 2 and fd not in ours and fd != side_fd and fd not in pass_fds
    ]
    actions += [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_DUP2, err_write, 2),
    ]
    if report_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, report_fd, 3))
    started = time.monotonic()
    try:
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(env),
            file_actions=actions,
            setsid=True,
            setsigmask=(),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores both
        )
    except BaseException:
        for fd in (out_read, err_read, side_fd):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in ours - {out_read, err_read}:
            os.close(fd)
    try:
        watch = _Watch(pid, started, limits, on_output, should_stop, disk=disk)
        return watch.run(out_read, err_read, side_fd)
    finally:
        for fd in (out_read, err_read, side_fd):
            if fd is not None:
                os.close(fd)


def _inheritable_fds() -> list[int]:
    """Our descriptors without close-on-exec (Python's own never are; C code's may be)."""
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        with suppress(OSError):
            if os.get_inheritable(int(entry.name)):
                found.append(int(entry.name))
    return found


class _Watch:
    """The event loop of one run: pipes, the pidfd, the clock and the stop flag."""

    def __init__(
        self,
        pid: int,
        started: float,
        limits: Limits,
        on_output: OutputSink,
        should_stop: Callable[[], bool] | None,
        *,
        disk: DiskWatch | None = None,
    ) -> None:
        self.pid = pid
        self.disk = disk
        self.limits = limits
        self.should_stop = should_stop
        self.output = LineSplitter(on_output, limits.max_output)
        self.side = bytearray()
        self.streams: dict[int, str] = {}
        self.started = started
        self.deadline = started + limits.timeout
        self.last_output = started
        self.next_stop_poll = started
        self.drain_until = math.inf
        self.stopped: ExecOutcome | None = None
        self.status: tuple[int, resource.struct_rusage] | None = None
        self.exited = False  # the pidfd fired, so wait4 will not block
        self.leftovers: list[str] = []

    def run(self, out_fd: int, err_fd: int, side_fd: int | None) -> Supervised:
        """Watch until the command is reaped and its output drained; kill it on error."""
        self.streams = {out_fd: "out", err_fd: "err"}
        if side_fd is not None:
            self.streams[side_fd] = "side"
        pidfd = _pidfd(self.pid)
        try:
            with selectors.DefaultSelector() as selector:
                for fd in self.streams:
                    os.set_blocking(fd, False)
                    selector.register(fd, selectors.EVENT_READ)
                if pidfd is not None:
                    selector.register(pidfd, selectors.EVENT_READ)
                while self._step(selector, pidfd):
                    pass
        except BaseException:  # on_output raised, or KeyboardInterrupt: leave nothing
            if self.status is None:
                _kill_group(self.pid)
                with suppress(ChildProcessError):
                    os.wait4(self.pid, 0)
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return self._summary(side_fd)

    def _step(self, selector: selectors.BaseSelector, pidfd: int | None) -> bool:
        """One turn of the loop; False once the command is reaped and its output drained."""
        now = time.monotonic()
        if self.status is None and self.stopped is None:
            self.stopped = self._limit_reached(now)
            if self.stopped is not None:
                _kill_group(self.pid)
        if self.status is not None and (not self.streams or now >= self.drain_until):
            return False
        for key, _ in selector.select(self._timeout(now, polling=pidfd is None)):
            fd = int(key.fd)
            if fd == pidfd:
                selector.unregister(pidfd)
                self.exited = True
            else:
                self._read(selector, fd)
        if self.status is None and (self.exited or pidfd is None):
            self.status = _reap(self.pid, block=self.exited)
            if self.status is not None:
                # Whatever is still in the group was left behind: list it, then kill it.
                # (After our own kill the group is merely dying: nothing to report.)
                if self.stopped is None:
                    self.leftovers = _group_members(self.pid)
                _kill_group(self.pid)
                self.drain_until = time.monotonic() + _DRAIN_GRACE
        return True

    def _limit_reached(self, now: float) -> ExecOutcome | None:
        if now >= self.deadline:
            return ExecOutcome.TIMEOUT
        idle = self.limits.idle_timeout
        if idle is not None and now - self.last_output >= idle:
            return ExecOutcome.HUNG
        if self.should_stop is not None and now >= self.next_stop_poll:
            self.next_stop_poll = now + _POLL_STOP
            if self.should_stop():
                return ExecOutcome.CANCELLED
        if self.disk is not None and self.disk.due(now) and self.disk.exceeded():
            return ExecOutcome.DISK_LIMIT
        return None

    def _timeout(self, now: float, *, polling: bool) -> float:
        if self.status is not None:
            return max(0.0, min(_POLL_STOP, self.drain_until - now))
        wake = now + _POLL_STOP
        if self.stopped is None:
            wake = min(wake, self.deadline)
            if self.limits.idle_timeout is not None:
                wake = min(wake, self.last_output + self.limits.idle_timeout)
        timeout = max(0.0, wake - now)
        return min(timeout, _POLL_EXIT) if polling else timeout

    def _read(self, selector: selectors.BaseSelector, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        at = datetime.now(UTC)
        name = self.streams[fd]
        if not data:
            selector.unregister(fd)
            del self.streams[fd]
            if name != "side":
                self.output.finish(name, at)
        elif name == "side":
            self.side += data[: max(0, _MAX_SIDE - len(self.side))]
        elif self.output.feed(name, data, at):  # chatter does not reset the watchdog
            self.last_output = time.monotonic()

    def _summary(self, side_fd: int | None) -> Supervised:
        wall = time.monotonic() - self.started
        self.output.close(datetime.now(UTC))
        assert self.status is not None  # the loop only ends once the command was reaped
        raw_status, usage = self.status
        code = os.waitstatus_to_exitcode(raw_status)
        return Supervised(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            stopped=self.stopped,
            wall_seconds=wall,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_memory_bytes=usage.ru_maxrss * 1024,
            output_bytes=self.output.total,
            output_truncated=self.output.truncated,
            chatter=self.output.chatter,
            leftovers=self.leftovers,
            escaped=bool(self.streams.keys() - {side_fd}),
            side_data=bytes(self.side),
        )


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel before 5.3: fall back to polling
        return None


def _reap(pid: int, *, block: bool) -> tuple[int, resource.struct_rusage] | None:
    found, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    return (status, usage) if found else None


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _group_members(pgid: int) -> list[str]:
    """``name (pid N)`` of every live process still in the group (none: the cheap case)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return []
    members = []
    for pid, name, pgrp, state in _proc_stats():
        if pgrp == pgid and state != "Z":
            members.append(f"{name} (pid {pid})")
    return limit_list(members)


def _proc_stats() -> Iterator[tuple[int, str, int, str]]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text(errors="replace")
            except OSError:
                continue
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2 :].split()
            yield int(entry.name), name, int(fields[2]), fields[0]
