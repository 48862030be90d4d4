"""One cgroup per sandboxed run, so memory and process limits bind the run, not a process.

Why: rlimits are per process. RLIMIT_AS lets every one of N processes take the whole
memory budget, and nothing in an rlimit counts the pages a run writes into tmpfs
(/tmp, /dev/shm). A memory cgroup charges both (anonymous memory and the shmem pages
of every tmpfs the run writes) to one counter, and a pids cgroup counts the run's
tasks whatever their uid. The run's cgroup gets ``memory = the budget`` and
``pids = processes``; the kernel's OOM killer acts inside it when the budget is
exhausted, and capataz reports that as the memory-limit outcome.

Where: under the cgroup capataz itself is in (``/proc/self/cgroup``), because that is
the subtree it has been delegated, if any. Two layouts are supported behind one small
interface (:class:`Layout`): cgroup v2 (one unified hierarchy whose
``cgroup.subtree_control`` already enables ``memory`` and ``pids`` below capataz's own
cgroup: a cgroup holding processes cannot enable controllers for its children itself)
and cgroup v1 (separate writable ``memory`` and ``pids`` hierarchies). Anything else,
including an unprivileged capataz without delegation, is "none": the run keeps its
rlimits and size-capped tmpfs, silently. :func:`detect` says which and why (for
``capataz doctor``) and is computed once per process.

No race: bwrap is started through :func:`enter_argv`, a ``/bin/sh`` that writes its
own pid into the run's ``cgroup.procs`` files and then execs bwrap, so the sandboxed
tree is inside the cgroup before its first fork (no ``preexec_fn``: capataz keeps
spawning through posix_spawn). The cgroup is removed when the run ends.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CGROUP_ROOT", "Layout", "RunCgroup", "detect", "enter_argv", "run_cgroup"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_REMOVE_WAIT = 2.0  # how long a dying run's tasks may take to leave before rmdir gives up


@dataclass(frozen=True)
class Layout:
    """Where run cgroups go and how this cgroup version names its files."""

    version: int  # 1 or 2; 0 = none
    memory_parent: Path | None = None
    pids_parent: Path | None = None
    reason: str = ""  # why none, or where

    @property
    def available(self) -> bool:
        return self.version != 0

    # The names that differ between v1 and v2; everything else is shared.
    @property
    def memory_limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    @property
    def swap_limit_file(self) -> str:
        return "memory.memsw.limit_in_bytes" if self.version == 1 else "memory.swap.max"

    @property
    def peak_file(self) -> str:
        return "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"

    @property
    def events_file(self) -> str:
        return "memory.oom_control" if self.version == 1 else "memory.events"


def _own_paths(text: str) -> dict[str, str]:
    """controller (or "" for the unified hierarchy) -> capataz's cgroup path."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


@functools.cache
def detect() -> Layout:
    """How this process can give each run its own cgroup (computed once)."""
    try:
        own = _own_paths(Path("/proc/self/cgroup").read_text())
    except (OSError, ValueError):
        return Layout(0, reason="/proc/self/cgroup is unreadable")
    if (CGROUP_ROOT / "cgroup.controllers").is_file():  # a pure unified (v2) mount
        parent = CGROUP_ROOT / own.get("", "/").lstrip("/")
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if not {"memory", "pids"} <= set(enabled):
            return Layout(0, reason=f"cgroup v2: memory and pids are not delegated below {parent}")
        if not _writable_dir(parent):
            return Layout(0, reason=f"cgroup v2: {parent} is not writable by this user")
        return Layout(2, parent, parent, reason="cgroup v2, below capataz's own cgroup")
    memory = CGROUP_ROOT / "memory" / own.get("memory", "/").lstrip("/")
    pids = CGROUP_ROOT / "pids" / own.get("pids", "/").lstrip("/")
    if "memory" not in own or "pids" not in own:
        return Layout(0, reason="no cgroup v2 and no v1 memory and pids hierarchies")
    for path in (memory, pids):
        if not _writable_dir(path):
            return Layout(0, reason=f"cgroup v1: {path} is not writable by this user")
    return Layout(1, memory, pids, reason="cgroup v1, below capataz's own cgroups")


class RunCgroup:
    """The cgroup(s) of one run: limits set, then read back once it has ended."""

    def __init__(self, layout: Layout, memory_dir: Path, pids_dir: Path) -> None:
        self.layout = layout
        self.memory_dir = memory_dir
        self.pids_dir = pids_dir

    @property
    def procs_files(self) -> list[str]:
        """Where the wrapper writes its pid (one file on v2, one per hierarchy on v1)."""
        dirs = dict.fromkeys([self.memory_dir, self.pids_dir])
        return [str(directory / "cgroup.procs") for directory in dirs]

    def oom_kills(self) -> int:
        """Processes the kernel killed because the run reached its memory limit."""
        with suppress(OSError, ValueError):
            for line in (self.memory_dir / self.layout.events_file).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def peak_memory(self) -> int | None:
        """The run's peak charge (processes and the tmpfs pages it wrote), when known."""
        try:
            return int((self.memory_dir / self.layout.peak_file).read_text())
        except (OSError, ValueError):
            return None


def _create(layout: Layout, name: str) -> tuple[Path, Path]:
    assert layout.memory_parent is not None and layout.pids_parent is not None
    memory = layout.memory_parent / name
    pids = layout.pids_parent / name
    memory.mkdir(mode=0o755)
    if pids != memory:
        try:
            pids.mkdir(mode=0o755)
        except OSError:
            memory.rmdir()
            raise
    return memory, pids


def _remove(directory: Path) -> None:
    """rmdir once the run's tasks are gone. The last of them (bwrap's init, released
    asynchronously after its PID namespace dies) usually leaves within a millisecond, so
    the wait starts tiny and doubles; a straggler is killed. Never fails a run."""
    deadline = time.monotonic() + _REMOVE_WAIT
    pause = 0.0002
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return  # left behind, empty of processes soon; harmless
        with suppress(OSError, ValueError):
            for pid in (directory / "cgroup.procs").read_text().split():
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@contextmanager
def run_cgroup(memory: int | None, processes: int | None) -> Iterator[RunCgroup | None]:
    """A fresh cgroup limited to ``memory`` bytes and ``processes`` tasks, or None where
    this machine does not let capataz create one (or setting it up fails): the caller
    then relies on rlimits alone. Removed on the way out."""
    layout = detect()
    if not layout.available or (memory is None and processes is None):
        yield None
        return
    try:
        memory_dir, pids_dir = _create(layout, f"capataz-{os.getpid()}-{os.urandom(4).hex()}")
    except OSError:
        yield None
        return
    group = RunCgroup(layout, memory_dir, pids_dir)
    try:
        try:
            if memory is not None:
                (memory_dir / layout.memory_limit_file).write_text(str(memory))
                with suppress(OSError):  # no swap accounting: nothing to bound
                    swap = str(memory) if layout.version == 1 else "0"
                    (memory_dir / layout.swap_limit_file).write_text(swap)
                if layout.version == 2:
                    with suppress(OSError):  # kill the whole run on OOM, not one process
                        (memory_dir / "memory.oom.group").write_text("1")
            if processes is not None:
                (pids_dir / "pids.max").write_text(str(processes))
        except OSError:
            yield None
            return
        yield group
    finally:
        for directory in dict.fromkeys([pids_dir, memory_dir]):
            _remove(directory)


# Runs before bwrap: puts itself (and so everything bwrap will start) into the run's
# cgroup(s), then becomes bwrap. Builtins only; a failure stops the run (exit 125)
# rather than running it without the limits capataz reported.
_ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def enter_argv(group: RunCgroup, argv: list[str]) -> list[str]:
    """``argv`` started through the wrapper that enters ``group`` first."""
    return ["/bin/sh", "-c", _ENTER, "sh", *group.procs_files, "--", *argv]
