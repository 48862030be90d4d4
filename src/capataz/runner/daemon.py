"""`capataz runner start|stop|status|logs`: the runner as a background process with a pid
file and a log file, the way the runbook's operators already run theirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from capataz.errors import TaskError
from capataz.statedir import state_dir

__all__ = [
    "DaemonFiles",
    "daemon_files",
    "is_alive",
    "read_pid",
    "start_daemon",
    "stop_daemon",
    "tail",
]


@dataclass(frozen=True)
class DaemonFiles:
    pid: Path
    log: Path


def daemon_files(repo_root: Path, name: str | None = None) -> DaemonFiles:
    suffix = f"-{name}" if name else ""
    base = state_dir(repo_root)
    return DaemonFiles(pid=base / f"runner{suffix}.pid", log=base / f"runner{suffix}.log")


def read_pid(files: DaemonFiles) -> int | None:
    try:
        return int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def start_daemon(repo_root: Path, files: DaemonFiles, run_args: list[str]) -> int:
    """Start `capataz runner run <run_args>` detached; returns its pid."""
    pid = read_pid(files)
    if is_alive(pid):
        raise TaskError(
            f"a runner is already running (PID {pid})",
            fix="`capataz runner stop` first, or start another with --name",
        )
    files.log.parent.mkdir(parents=True, exist_ok=True)
    with files.log.open("ab") as log, Path(os.devnull).open("rb") as devnull:
        process = subprocess.Popen(
            [sys.executable, "-m", "capataz", "runner", "run", *run_args],
            cwd=repo_root,
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    files.pid.write_text(f"{process.pid}\n")
    time.sleep(0.3)
    if process.poll() is not None:
        files.pid.unlink(missing_ok=True)
        raise TaskError(
            f"the runner exited at once (code {process.returncode})", fix=f"read {files.log}"
        )
    return process.pid


def stop_daemon(files: DaemonFiles, timeout: float) -> int:
    """SIGTERM the runner and wait for it to finish its tasks; SIGKILL after ``timeout``."""
    pid = read_pid(files)
    if not is_alive(pid):
        files.pid.unlink(missing_ok=True)
        raise TaskError("no runner is running", fix="`capataz runner start` starts one")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if is_alive(pid):
        os.kill(pid, signal.SIGKILL)
    files.pid.unlink(missing_ok=True)
    return pid


def tail(path: Path, lines: int) -> list[str]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", errors="replace") as handle:
        return list(deque(handle, maxlen=lines))
