"""The contract between capataz and a sandbox backend (bubblewrap or none).

A backend runs one command tree with limits, streams its output line by line, and
returns how it ended. It must leave no process behind when ``run`` returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from capataz.config import Limits
from capataz.sandbox.network.policy import ConnectionRecord, NetworkPolicy

__all__ = [
    "ExecOutcome",
    "ExecResult",
    "OutputLine",
    "OutputSink",
    "Sandbox",
    "SandboxSpec",
]


class ExecOutcome(StrEnum):
    OK = "ok"  # exit code 0
    FAILED = "failed"  # non-zero exit code or killed by a signal it did not get from us
    TIMEOUT = "timeout"  # wall-clock limit reached; killed
    HUNG = "hung"  # no output for idle_timeout seconds; killed
    CANCELLED = "cancelled"  # the caller asked to stop it; killed
    MEMORY_LIMIT = "memory-limit"  # the run's cgroup ran out of memory: the kernel killed
    DISK_LIMIT = "disk-limit"  # wrote more than ``disk`` into its workspace; killed


@dataclass(frozen=True)
class OutputLine:
    at: datetime  # when capataz read it (UTC)
    stream: str  # "out" or "err"
    text: str  # one line, without its newline; invalid UTF-8 replaced


OutputSink = Callable[[OutputLine], "bool | None"]
"""Receives each line. Returning False says "this line is not progress" (an agent's
retry notice, a reconnect message): it is still delivered and logged, but it does not
reset the idle watchdog, so an agent that only ever prints chatter is found HUNG after
``idle_timeout``. None (or True) counts the line as progress."""


@dataclass(frozen=True)
class SandboxSpec:
    argv: list[str]
    workspace: Path  # writable; the command's cwd; same path inside and outside
    limits: Limits
    git_dir: Path | None = None  # mounted read-only at <workspace>/.git when given
    read_only: list[Path] = field(default_factory=list)  # extra host paths visible read-only
    hide: list[Path] = field(default_factory=list)  # host dirs replaced by an empty tmpfs
    # added to the clean environment; may carry secrets, so kept out of repr()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # True: the host's network; False: none; a policy: only its hosts, through a proxy
    # on the host (see capataz.sandbox.network; a backend that cannot enforce it refuses)
    network: bool | NetworkPolicy = False
    # told of each connection the proxy decided, from the proxy's thread, as it happens:
    # must be quick and thread-safe (ExecResult.connections has them all afterwards)
    on_connection: Callable[[ConnectionRecord], None] | None = None
    # secrets delivered as files (name -> value): each backend writes them where only
    # the command can read them and sets NAME_FILE to the path; never on disk or argv
    secret_files: dict[str, str] = field(default_factory=dict, repr=False)
    # the agent's persistent cache (capataz.sandbox.cache): a host directory shown
    # writable at $HOME/.cache; written by the untrusted agent, never run by capataz
    cache: Path | None = None


@dataclass(frozen=True)
class ExecResult:
    outcome: ExecOutcome
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    output_bytes: int  # everything the command printed, kept or not
    output_truncated: bool  # more than limits.max_output was printed
    leftover_processes: list[str]  # processes still alive when the command exited (killed)
    detail: str = ""  # a human sentence on how it ended, e.g. "no output for 120 s"
    # every connection the network allowlist's proxy decided (allowed or denied), in
    # order; empty without an allowlist. Bounded (capataz.sandbox.network.proxy.MAX_RECORDS).
    connections: list[ConnectionRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is ExecOutcome.OK


class Sandbox(Protocol):
    name: str

    def run(
        self,
        spec: SandboxSpec,
        on_output: OutputSink,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run ``spec.argv`` to the end (or a limit) and return how it ended."""
        ...

    def check(self) -> list[str]:
        """Problems that stop this backend from working here (empty when it works)."""
        ...
