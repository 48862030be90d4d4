"""`capataz runner start|stop|status|logs`: the runner as a background process with a pid
file and a log file, the way the runbook's operators already run theirs (docs/runbook.md
maps their commands)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import capataz
from capataz.errors import TaskError
from capataz.statedir import private_file, state_dir

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


# Run by ``python -I -c``: isolated mode ignores PYTHON* variables and never puts the
# working directory (the repository, which agents write) on sys.path; the import path is
# then the one this process used, minus anything inside the repository.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); sys.argv[0] = 'capataz'; "
    "from capataz.cli import main; main()"
)


def capataz_argv(repo_root: Path) -> list[str]:
    """The command that starts capataz again, importing it from where this process did.

    ``python -m capataz`` with the repository as working directory would import a
    ``capataz/__main__.py`` an agent landed there, on the host, as whoever runs the
    runner. Not by a list of tricks but by construction, no file of the repository can
    be imported by the new process: its path is fixed here, and the repository is not
    on it."""
    root = repo_root.resolve()

    def inside(entry: Path) -> bool:
        return entry == root or root in entry.parents

    package = Path(capataz.__file__).resolve().parent
    if inside(package):
        raise TaskError(
            f"capataz itself is imported from {package}, inside the repository it supervises: "
            "a runner would run code agents can change",
            fix="install capataz outside this repository (pip install ., not pip install -e .)",
        )
    path = [str(Path(e).resolve()) for e in sys.path if e and not inside(Path(e).resolve())]
    return [sys.executable, "-I", "-c", _BOOT, json.dumps(path)]


def start_daemon(repo_root: Path, files: DaemonFiles, run_args: list[str]) -> int:
    """Start `capataz runner run <run_args>` detached; returns its pid."""
    pid = read_pid(files)
    if is_alive(pid):
        raise TaskError(
            f"a runner is already running (PID {pid})",
            fix="`capataz runner stop` first, or start another with --name",
        )
    files.log.parent.mkdir(parents=True, exist_ok=True)
    with private_file(files.log).open("ab") as log, Path(os.devnull).open("rb") as devnull:
        process = subprocess.Popen(
            [*capataz_argv(repo_root), "runner", "run", *run_args],
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
