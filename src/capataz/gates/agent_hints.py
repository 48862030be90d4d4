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
from collections.abc import Iterator, Sequence
from pathlib import Path

from capataz.sandbox.mounts import MASKED
from capataz.sandbox.process import BASE_ENV
from capataz.units import format_bytes

__all__ = ["memory_hint", "missing_command_hint"]

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


def _chain(command: str, search_path: str) -> Iterator[tuple[Path, bool]]:
    """Every file the kernel opens to start ``command``: the path found, each symlink
    hop, the target, then the same for its interpreter; (path, exists on the host)."""
    found = _find(command, search_path)
    hops = 0
    while found is not None and hops < _MAX_HOPS:
        path = Path(os.path.normpath(found.absolute()))  # ".." folded, links kept
        yield path, os.path.lexists(path)
        hops += 1
        if path.is_symlink():
            found = path.parent / path.readlink()
            continue
        if not path.exists():
            return
        interpreter = _interpreter(path)
        found = _find(interpreter, search_path) if interpreter else None


def _expose_dir(path: Path, mask: str) -> str:
    """The directory to expose for ``path``: its package rather than its bin/ folder
    (a venv or node_modules needs its lib/ too), never the mask itself."""
    directory = path.parent
    if directory.name in ("bin", ".bin") and str(directory.parent) != mask:
        directory = directory.parent
    return str(directory)


def missing_command_hint(
    argv: Sequence[str], *, search_path: str | None = None, expose: Sequence[str] = ()
) -> tuple[str, str]:
    """(what is missing, how to fix it) for an agent that exited 127 or 126."""
    if not argv:
        return "the agent has no command", "give the agent a command (or a preset)"
    search_path = search_path or BASE_ENV["PATH"]
    shown = [str(Path(e).expanduser().resolve()) for e in expose]
    hidden: list[tuple[Path, str]] = []
    missing: Path | None = None
    for path, exists in _chain(argv[0], search_path):
        mask = next((m for m in MASKED if _under(str(path), m)), None)
        if mask is not None and not any(_under(str(path), e) for e in shown):
            hidden.append((path, mask))
        elif not exists and missing is None:
            missing = path
    if hidden:
        dirs: list[str] = []
        for path, mask in hidden:
            directory = _expose_dir(path, mask)
            if not any(_under(directory, d) for d in dirs):
                dirs = [d for d in dirs if not _under(d, directory)] + [directory]
        path, mask = hidden[0]
        what = f"{path} is under {mask}, which the sandbox masks (an empty directory inside)"
        entries = ", ".join(f'"{d}"' for d in dirs)
        return (
            f"the agent's command cannot be found inside the sandbox: {what}",
            f"show it read-only to agents: [sandbox] expose = [{entries}] in capataz.toml",
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
