"""Why an agent could not even start, said in terms of what the user can change.

Two deaths have causes the exit status alone does not reveal:

* exit 127 (126): the command, a symlink it goes through, or its interpreter (a
  ``#!`` line, a venv's python) is not visible inside the sandbox, which shows the host
  read-only but masks ``/root``, ``/home``, ``/tmp``, ``/var/tmp`` and ``/run`` with
  empty directories. The command is resolved here, on the host, the way the sandbox
  would (its PATH, every symlink, the interpreter chain), and the first piece a mask
  hides is named together with the ``[sandbox] expose`` entry that shows it.
* SIGILL/SIGSEGV/SIGBUS/SIGTRAP/SIGABRT soon after start under a memory limit:
  runtimes that reserve a large address space up front (Bun, V8) crash instead of
  failing an allocation when ``memory`` (also an address-space limit per process) is
  lower than that reservation. Claude Code 2.1's Bun aborts at 512 MiB, for one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from capataz.sandbox.mounts import MASKED
from capataz.sandbox.process import BASE_ENV
from capataz.units import format_bytes

__all__ = [
    "CommandFile",
    "command_files",
    "expose_entries",
    "expose_fix",
    "hiding_mask",
    "memory_hint",
    "missing_command_hint",
]

_CRASHES = {signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGTRAP, signal.SIGABRT}
_AT_START = 30.0  # seconds: a crash later than this is not blamed on the reservation
_MAX_HOPS = 16  # symlinks and interpreters followed at most


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _find(command: str, search_path: str) -> Path | None:
    """Where the sandbox's ``execvp`` would find ``command`` (checked on the host)."""
    if "/" in command:
        return Path(command).expanduser()
    for directory in search_path.split(":"):
        candidate = Path(directory or ".", command)
        if os.path.lexists(candidate):
            return candidate
    return None


def _interpreter(path: Path) -> str | None:
    """The program a ``#!`` line names (``/usr/bin/env X``: X), or None."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return rest[0] if rest else None
    return words[0]


@dataclass(frozen=True)
class CommandFile:
    """One file the kernel opens to start a command, as the host sees it."""

    path: Path  # ".." folded, symlinks kept: each hop is a file of its own
    exists: bool
    program: int  # 0: the command itself, 1: its interpreter, 2: that one's, ...
    name: str  # what was looked up for this program: "claude", "node", "/usr/bin/env"


def command_files(command: str, search_path: str | None = None) -> list[CommandFile]:
    """Every file the kernel opens to start ``command`` with the sandbox's PATH
    (``search_path``, by default the sandbox's own): the path found, each symlink hop,
    the target, then the same for its interpreter (a ``#!`` line, ``env X``: X).
    Empty when ``command`` is not on that PATH at all."""
    search_path = search_path or BASE_ENV["PATH"]
    files: list[CommandFile] = []
    name, program = command, 0
    found = _find(command, search_path)
    while found is not None and len(files) < _MAX_HOPS:
        path = Path(os.path.normpath(found.absolute()))
        files.append(CommandFile(path, os.path.lexists(path), program, name))
        if path.is_symlink():
            found = path.parent / path.readlink()
            continue
        if not path.exists():
            break
        interpreter = _interpreter(path)
        if interpreter is None:
            break
        name, program = interpreter, program + 1
        found = _find(interpreter, search_path)
    return files


def hiding_mask(
    path: Path | str, *, expose: Sequence[str] = (), hide: Sequence[Path | str] = ()
) -> str | None:
    """The directory whose mask hides ``path`` inside the sandbox (one of MASKED, or a
    ``hide`` directory such as the repository), or None when ``path`` is visible: not
    under a mask, or under an ``expose`` entry."""
    shown = [str(Path(e).expanduser().resolve()) for e in expose]
    text = str(path)
    if any(_under(text, e) for e in shown):
        return None
    hidden = [str(Path(h).resolve()) for h in hide]
    return next((m for m in (*MASKED, *hidden) if _under(text, m)), None)


def expose_entries(hidden: Sequence[tuple[Path, str]]) -> list[str]:
    """The ``[sandbox] expose`` entries that show every (path, mask) of ``hidden``,
    each the path's package directory, none inside another."""
    dirs: list[str] = []
    for path, mask in hidden:
        directory = _expose_dir(path, mask)
        if not any(_under(directory, d) for d in dirs):
            dirs = [d for d in dirs if not _under(d, directory)] + [directory]
    return dirs


def expose_fix(dirs: Sequence[str]) -> str:
    """The one sentence that shows ``dirs`` to agents."""
    entries = ", ".join(f'"{d}"' for d in dirs)
    return f"show it read-only to agents: [sandbox] expose = [{entries}] in capataz.toml"


def _expose_dir(path: Path, mask: str) -> str:
    """The directory to expose for ``path``: its package rather than its bin/ folder
    (a venv or node_modules needs its lib/ too), never the mask itself."""
    directory = path.parent
    if directory.name in ("bin", ".bin") and str(directory.parent) != mask:
        directory = directory.parent
    return str(directory)


def missing_command_hint(
    argv: Sequence[str],
    *,
    search_path: str | None = None,
    expose: Sequence[str] = (),
    hide: Sequence[Path | str] = (),
) -> tuple[str, str]:
    """(what is missing, how to fix it) for an agent that exited 127 or 126. ``hide``:
    directories the run masks beyond MASKED (the repository)."""
    if not argv:
        return "the agent has no command", "give the agent a command (or a preset)"
    search_path = search_path or BASE_ENV["PATH"]
    hidden: list[tuple[Path, str]] = []
    missing: Path | None = None
    for found in command_files(argv[0], search_path):
        mask = hiding_mask(found.path, expose=expose, hide=hide)
        if mask is not None:
            hidden.append((found.path, mask))
        elif not found.exists and missing is None:
            missing = found.path
    if hidden:
        path, mask = hidden[0]
        what = f"{path} is under {mask}, which the sandbox masks (an empty directory inside)"
        return (
            f"the agent's command cannot be found inside the sandbox: {what}",
            expose_fix(expose_entries(hidden)),
        )
    if missing is not None:
        return (
            f"the agent's command cannot be found: {missing} does not exist",
            "install it, or fix the agent's command in capataz.toml",
        )
    if _find(argv[0], search_path) is None:
        return (
            f"the agent's command {argv[0]!r} is not on the sandbox's PATH ({search_path})",
            "use its absolute path in the agent's command (and expose its directory if it "
            "is under /root, /home or /tmp), or set PATH in the agent's env",
        )
    return (
        "a command the agent ran was not found inside the sandbox (its own command "
        f"{argv[0]} is visible)",
        "read artifacts/run.log for the missing name; [sandbox] expose shows host "
        "directories under /root, /home or /tmp to agents",
    )


def memory_hint(number: int | None, memory: int | None, wall_seconds: float) -> str | None:
    """The suggestion for a crash at start under an address-space limit, or None."""
    if number is None or memory is None or wall_seconds > _AT_START:
        return None
    if number not in _CRASHES:
        return None
    return (
        f"a crash by {signal.Signals(number).name} right after start under memory = "
        f"{format_bytes(memory)} is typical of runtimes that reserve address space up "
        'front (Bun, V8): raise memory for this agent, or set memory = "unlimited"'
    )
