"""The supervisor both backends share: spawn, limit, stream, time out, kill, account.

One command tree per call. The tree gets its own session (so one ``killpg`` reaches
everything that did not deliberately leave it), rlimits set in the child between fork
and exec (setting them from the parent after spawn would race with the command's
first fork), stdin from /dev/null (an agent waiting for a human on stdin would only
ever look hung) and an environment built from scratch (the runner's own variables,
tokens included, must not leak into an agent).

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from capataz.config import Limits
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, OutputSink

__all__ = [
    "BASE_ENV",
    "Supervised",
    "build_result",
    "clean_env",
    "processes_in_use",
    "rlimits_for",
    "supervise",
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
_MAX_LINE = 1024 * 1024  # a longer run of bytes without a newline is delivered in pieces
_POLL_STOP = 0.1  # how often should_stop() is asked
_POLL_EXIT = 0.01  # exit polling when the kernel offers no pidfd
_DRAIN_GRACE = 1.0  # how long output may stay open after the command tree was killed
_MAX_LISTED = 50
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


@dataclass(frozen=True)
class Supervised:
    """What the supervisor observed; a backend turns it into an :class:`ExecResult`."""

    exit_code: int | None
    signal: int | None
    stopped: ExecOutcome | None  # why capataz killed the tree, when it did
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    output_bytes: int
    output_truncated: bool
    leftovers: list[str] = field(default_factory=list)  # group members alive after exit
    escaped: bool = False  # something outside the group kept the output pipes open
    side_data: bytes = b""


class _Output:
    """Splits the two pipes into lines and spends the ``max_output`` budget on them."""

    def __init__(self, sink: OutputSink, budget: int) -> None:
        self.sink = sink
        self.budget = budget
        self.total = 0
        self.delivered = 0
        self.truncated = False
        self.pending: dict[str, bytes] = {"out": b"", "err": b""}

    def feed(self, stream: str, data: bytes, at: datetime) -> None:
        self.total += len(data)
        if self.truncated:
            return  # only counted from now on: no splitting work for a flood
        *lines, rest = (self.pending[stream] + data).split(b"\n")
        self.pending[stream] = rest
        for raw in lines:
            if not self._deliver(stream, raw, 1, at):
                return
        while len(self.pending[stream]) >= _MAX_LINE:
            piece, self.pending[stream] = (
                self.pending[stream][:_MAX_LINE],
                self.pending[stream][_MAX_LINE:],
            )
            if not self._deliver(stream, piece, 0, at):
                return

    def finish(self, stream: str, at: datetime) -> None:
        rest, self.pending[stream] = self.pending[stream], b""
        if rest and not self.truncated:
            self._deliver(stream, rest, 0, at)

    def close(self, at: datetime) -> None:
        if self.truncated:
            dropped = self.total - self.delivered
            self.sink(
                OutputLine(
                    at,
                    "err",
                    f"[capataz] output truncated: {dropped} more bytes were printed after "
                    f"the first {self.delivered} (max_output is {self.budget} bytes)",
                )
            )

    def _deliver(self, stream: str, raw: bytes, newline: int, at: datetime) -> bool:
        if self.delivered + len(raw) + newline > self.budget:
            self.truncated = True
            self.pending = {"out": b"", "err": b""}
            return False
        self.delivered += len(raw) + newline
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        self.sink(OutputLine(at, stream, text))
        return True


def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limits: Limits,
    on_output: OutputSink,
    should_stop: Callable[[], bool] | None = None,
    processes: int | None = None,
    child_fds: Mapping[int, int] | None = None,
    side_fd: int | None = None,
    kill_extra: Callable[[], None] | None = None,
) -> Supervised:
    """Run ``argv`` to its end or to a limit; every process left in its group is killed.

    ``child_fds`` maps a descriptor number in the child to one of ours, which is closed
    here once the child started (fixed numbers, because a POSIX shell can only name
    fds 0-9). ``side_fd`` is the read end of a pipe whose other end the command tree
    holds (the bwrap init's leftover report); it is read alongside the output, so a long
    report cannot block its writer, and closed here. Raises OSError when ``argv`` cannot
    be started at all. ``kill_extra`` is called whenever the tree is killed, for what a
    process-group kill cannot reach (bwrap's sandbox runs in a session of its own).
    """
    rlimits = rlimits_for(limits, processes=processes)
    moves = dict(child_fds or {})

    def prepare_child() -> None:  # runs between fork and exec: plain syscalls only
        for target, source in moves.items():
            if target != source:
                os.dup2(source, target)
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))

    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            close_fds=True,
            pass_fds=tuple(moves),
            start_new_session=True,
            preexec_fn=prepare_child,  # noqa: PLW1509  (no locks taken; see docstring)
        )
    except BaseException:
        if side_fd is not None:
            os.close(side_fd)
        raise
    finally:
        for fd in moves.values():
            os.close(fd)
    try:
        watch = _Watch(proc, started, limits, on_output, should_stop)
        watch.kill_extra = kill_extra
        return watch.run(side_fd)
    except BaseException:
        _kill_group(proc.pid)
        if kill_extra is not None:
            kill_extra()
        with suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if side_fd is not None:
            os.close(side_fd)


class _Watch:
    """The event loop of one run: pipes, the pidfd, the clock and the stop flag."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        started: float,
        limits: Limits,
        on_output: OutputSink,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.limits = limits
        self.should_stop = should_stop
        self.output = _Output(on_output, limits.max_output)
        self.side = bytearray()
        self.streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
        self.started = started
        self.deadline = started + limits.timeout
        self.last_output = started
        self.next_stop_poll = started
        self.drain_until = math.inf
        self.stopped: ExecOutcome | None = None
        self.status: tuple[int, resource.struct_rusage] | None = None
        self.exited = False  # the pidfd fired, so wait4 will not block
        self.leftovers: list[str] = []
        self.kill_extra: Callable[[], None] | None = None

    def run(self, side_fd: int | None) -> Supervised:
        if side_fd is not None:
            self.streams[side_fd] = "side"
        with selectors.DefaultSelector() as selector:
            for fd in self.streams:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            pidfd = _pidfd(self.proc.pid)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ)
            try:
                while self._step(selector, pidfd):
                    pass
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
                _kill_group(self.proc.pid)
                if self.kill_extra is not None:
                    self.kill_extra()
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
            self.status = _reap(self.proc.pid, block=self.exited)
            if self.status is not None:
                self.proc.returncode = self.status[0]
                # Whatever is still in the group was left behind: list it, then kill it.
                self.leftovers = _group_members(self.proc.pid)
                _kill_group(self.proc.pid)
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
        else:
            self.last_output = time.monotonic()
            self.output.feed(name, data, at)

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


def limit_list(items: list[str]) -> list[str]:
    """At most ``_MAX_LISTED`` entries, plus one saying how many more there were."""
    if len(items) <= _MAX_LISTED:
        return items
    return [*items[:_MAX_LISTED], f"... and {len(items) - _MAX_LISTED} more"]


_SIGNAL_HINTS: dict[int, str] = {
    signal.SIGXCPU: "the CPU time limit was reached",
    signal.SIGXFSZ: "a file reached the file_size limit",
    signal.SIGKILL: "not by capataz; perhaps the kernel's out-of-memory killer",
}


def build_result(
    run: Supervised,
    limits: Limits,
    *,
    exit_code: int | None = None,
    signal_number: int | None = None,
    leftovers: list[str] | None = None,
) -> ExecResult:
    """The :class:`ExecResult` for ``run``, with a sentence saying how it ended.

    A backend may override the exit status (bwrap learns it from a shell, which turns
    death by signal N into 128+N) and the leftover list (bwrap's init reports them).
    """
    if exit_code is None and signal_number is None:
        exit_code, signal_number = run.exit_code, run.signal
    leftovers = run.leftovers if leftovers is None else leftovers
    if run.stopped is not None:
        outcome = run.stopped
        detail = {
            ExecOutcome.TIMEOUT: f"still running after {limits.timeout:g} s; killed",
            ExecOutcome.HUNG: f"no output for {limits.idle_timeout or 0:g} s; killed as a hang",
            ExecOutcome.CANCELLED: "stopped on request; killed",
        }.get(run.stopped, "killed")
    elif exit_code == 0:
        outcome, detail = ExecOutcome.OK, "exit code 0"
    else:
        outcome = ExecOutcome.FAILED
        if signal_number is not None:
            detail = f"killed by {_signal_name(signal_number)}"
            hint = _SIGNAL_HINTS.get(signal_number)
            detail += f" ({hint})" if hint else ""
        else:
            detail = f"exit code {exit_code}"
    if leftovers:
        detail += f"; killed processes it left behind: {', '.join(leftovers)}"
    if run.escaped:
        detail += "; a process that left the process group kept its output open"
    if run.output_truncated:
        detail += f"; output truncated at {limits.max_output} bytes"
    return ExecResult(
        outcome=outcome,
        exit_code=exit_code if signal_number is None else None,
        signal=signal_number,
        wall_seconds=run.wall_seconds,
        cpu_seconds=run.cpu_seconds,
        peak_memory_bytes=run.peak_memory_bytes,
        output_bytes=run.output_bytes,
        output_truncated=run.output_truncated,
        leftover_processes=leftovers,
        detail=detail,
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
