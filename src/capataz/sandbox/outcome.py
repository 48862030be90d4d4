"""From what the supervisor saw to the :class:`ExecResult` a user reads.

Kept apart from the supervisor so that the wording of ``detail`` (what the CLI and the
run log show) lives in one place for both backends.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from capataz.config import Limits
from capataz.sandbox.base import ExecOutcome, ExecResult
from capataz.units import format_bytes

__all__ = ["Supervised", "build_result", "limit_list"]

_MAX_LISTED = 50


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
    chatter: int = 0  # lines the sink called chatter since the last progress
    leftovers: list[str] = field(default_factory=list)  # group members alive after exit
    escaped: bool = False  # something outside the group kept the output pipes open
    side_data: bytes = b""


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
    over_disk_limit: int | None = None,
    oom_kills: int = 0,
    peak_memory: int | None = None,
) -> ExecResult:
    """The :class:`ExecResult` for ``run``, with a sentence saying how it ended.

    A backend may override the exit status (bwrap learns it from a shell, which turns
    death by signal N into 128+N) and the leftover list (bwrap's init reports them).
    The per-run limits add: ``over_disk_limit``, the bytes the run wrote into its
    workspace when that exceeded ``limits.disk`` (found while it ran, or only by the
    scan after it), ``oom_kills`` by the run's cgroup, and ``peak_memory``, the cgroup's
    peak (tmpfs pages included), which replaces the largest process's when known.
    """
    if exit_code is None and signal_number is None:
        exit_code, signal_number = run.exit_code, run.signal
    leftovers = run.leftovers if leftovers is None else leftovers
    stopped = run.stopped
    if over_disk_limit is not None and stopped in (None, ExecOutcome.DISK_LIMIT):
        stopped = ExecOutcome.DISK_LIMIT
    elif oom_kills and stopped is None:
        stopped = ExecOutcome.MEMORY_LIMIT
    if stopped is not None:
        outcome = stopped
        detail = {
            ExecOutcome.TIMEOUT: f"still running after {limits.timeout:g} s; killed",
            ExecOutcome.HUNG: _hang_detail(limits.idle_timeout or 0, run.chatter),
            ExecOutcome.CANCELLED: "stopped on request; killed",
            ExecOutcome.DISK_LIMIT: f"wrote {format_bytes(over_disk_limit)} into its workspace, "
            f"over its disk limit of {format_bytes(limits.disk)}"
            + ("; killed" if run.stopped is ExecOutcome.DISK_LIMIT else ""),
            ExecOutcome.MEMORY_LIMIT: f"the run reached its memory limit of "
            f"{format_bytes(limits.memory)}; the kernel killed {oom_kills} of its processes",
        }.get(stopped, "killed")
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
        peak_memory_bytes=run.peak_memory_bytes if peak_memory is None else peak_memory,
        output_bytes=run.output_bytes,
        output_truncated=run.output_truncated,
        leftover_processes=leftovers,
        detail=detail,
    )


def _hang_detail(idle: float, chatter: int) -> str:
    if not chatter:
        return f"no output for {idle:g} s; killed as a hang"
    return f"no progress for {idle:g} s, only {chatter} line(s) of retry chatter; killed as a hang"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
