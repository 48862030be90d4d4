"""capataz's own directory in a repository, ``.capataz/``: created with a ``.gitignore``
of its own (like .pytest_cache), so the database, progress files and workspaces never
end up in a user's commit even before `capataz init` added the ignore rule.

It is private (0700), and so are the files that hold what only its owner may read — the
database, the master key, logs (0600): on a shared machine another account must not read
task instructions, run logs or encrypted secrets next to their key. A directory made by
an older capataz with wider modes is narrowed the next time it is used."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from capataz.errors import TaskError
from capataz.redaction import redact_data

__all__ = ["STATE_DIR", "private_file", "refuse_symlink", "state_dir", "write_json_atomic"]

STATE_DIR = ".capataz"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def state_dir(repo_root: Path) -> Path:
    path = repo_root / STATE_DIR
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    _narrow(path, _DIR_MODE)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by capataz: nothing here belongs in git\n*\n")
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` 0600 if it does not exist yet (never through a symlink), or narrow
    it to 0600; return it. Call before another library opens the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & ~_FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    return path


def _narrow(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)


def refuse_symlink(path: Path) -> None:
    """capataz deletes and rewrites its own directories; one replaced by a symlink (which
    only something outside capataz could plant) must never be followed."""
    for candidate in (path, *path.parents):
        if candidate.is_symlink():
            raise TaskError(
                f"{candidate} is a symbolic link; capataz will not write through it",
                fix=f"remove the link ({candidate}) and run again",
            )
        if candidate.name == ".capataz":
            return


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(redact_data(data), indent=2, default=str)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
