"""The writable, RAM-backed part of the bubblewrap sandbox, sized to the run's budget.

Why this matters: a tmpfs lives in RAM (and swap), and pages written to it are not
counted by any rlimit: before this module, a run limited to 256 MiB per process could
pin about 2 GB of host memory through an uncapped ``/dev/shm`` and several tmpfs masks
each as large as the limit. So every tmpfs the run can write is capped, and the caps
add up to less than its ``memory`` budget M:

* ``/tmp`` (which holds HOME, ``/tmp/home``): M/2;
* ``/dev/shm``: a private tmpfs of M/4 (the one inside ``bwrap --dev`` is part of /dev's
  tmpfs, uncapped, half the host's RAM);
* ``/root``, ``/home``, ``/run``, ``/var/tmp``, the hidden repository and ``/dev``
  itself: remounted read-only once the sandbox's own directories and binds are made
  there (they hide secrets; nobody needs to write them);
* secrets delivered as files: a private tmpfs of 8 MiB, only when there are any.

That leaves at least M/4 for the processes even with both tmpfs full; where capataz
can give the run a cgroup, the cgroup charges tmpfs pages and process memory to the same
budget M anyway (see capataz.sandbox.cgroups). ``memory = "unlimited"`` leaves the
tmpfs at the kernel's default size (half of RAM each). Capping needs bwrap's
``--size`` (bubblewrap 0.6+); an older bwrap runs uncapped, as ``capataz doctor`` says.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from capataz.errors import SandboxError

__all__ = [
    "HOME",
    "MASKED",
    "SECRETS_DIR",
    "data_pipes",
    "masks",
    "parents_inside",
    "read_only_masks",
    "scratch_mounts",
    "secret_pipes",
    "tmpfs_caps",
]

# Hidden behind an empty tmpfs: secrets (keys, tokens, agent sockets) live there.
MASKED = ("/root", "/home", "/tmp", "/var/tmp", "/run")
WRITABLE = "/tmp"  # the only mask left writable (TMPDIR and HOME)
HOME = "/tmp/home"
SHM = "/dev/shm"
# Secrets delivered as files: a private tmpfs of their own inside the masked /run.
SECRETS_DIR = "/run/capataz/secrets"
SECRETS_SIZE = 8 * 1024 * 1024


def tmpfs_caps(memory: int | None) -> tuple[int, int] | None:
    """(``/tmp`` size, ``/dev/shm`` size) for a budget of ``memory`` bytes; None when
    unlimited. Never below a page, so a tiny budget still gives a usable mount."""
    if memory is None:
        return None
    return max(memory // 2, 4096), max(memory // 4, 4096)


def masks() -> list[str]:
    """The MASKED directories this host has (a missing or symlinked one is skipped)."""
    found = []
    for mask in MASKED:
        with suppress(OSError):
            if stat.S_ISDIR(os.lstat(mask).st_mode):
                found.append(mask)
    return found


def parents_inside(path: str, masks: Sequence[str]) -> list[str]:
    """Directories between a masked root and ``path`` that bwrap would create 0700.

    Created explicitly 0755 instead, so the unprivileged uid can reach ``path``.
    """
    for mask in sorted(masks, key=len, reverse=True):  # the innermost mask owns the path
        if path.startswith(mask + "/"):
            parts = Path(path).relative_to(mask).parts[:-1]
            return [str(Path(mask, *parts[: i + 1])) for i in range(len(parts))]
    return []


def _secret_mounts(secret_fds: Sequence[tuple[str, int]], sized: bool) -> list[str]:
    """A private tmpfs at :data:`SECRETS_DIR` (0700) with one 0400 file per secret,
    copied by bwrap from its pipe."""
    if not secret_fds:
        return []
    small = ["--size", str(SECRETS_SIZE)] if sized else []
    argv = ["--perms", "0755", "--dir", str(Path(SECRETS_DIR).parent)]
    argv += [*small, "--perms", "0700", "--tmpfs", SECRETS_DIR]
    for name, fd in secret_fds:
        argv += ["--perms", "0400", "--file", str(fd), f"{SECRETS_DIR}/{name}"]
    return argv


@contextmanager
def data_pipes(files: dict[str, str]) -> Iterator[list[tuple[str, int]]]:
    """One pipe per file (a secret, the agent's git config), filled and closed for
    writing, its read end inheritable at a number above 9 (clear of the fds the spawn
    remaps): bwrap reads each into the sandbox, so the value never touches a disk or a
    command line. The read ends are
    closed on the way out when the spawn did not take them."""
    fds: list[tuple[str, int]] = []
    try:
        for name, value in files.items():
            data = value.encode("utf-8")
            read_end, write_end = os.pipe()
            try:
                if len(data) > 65536:
                    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, len(data))
                os.write(write_end, data)
                fds.append((name, fcntl.fcntl(read_end, fcntl.F_DUPFD, 10)))
            except OSError as exc:
                raise SandboxError(
                    f"{name} cannot be handed to the sandbox ({exc.strerror or exc})",
                    fix="secrets delivered as files must fit a pipe (1 MiB by default)",
                ) from exc
            finally:
                os.close(read_end)
                os.close(write_end)
        yield fds
    finally:
        for _, fd in fds:
            with suppress(OSError):
                os.close(fd)


def scratch_mounts(
    *,
    memory: int | None,
    hide: Sequence[Path],
    as_root: bool,
    options: frozenset[str],
    secret_fds: Sequence[tuple[str, int]] = (),
    home_fds: Sequence[tuple[str, int]] = (),
) -> tuple[list[str], list[str]]:
    """bwrap arguments for /dev, the tmpfs masks, the hidden directories, HOME (with the
    files ``home_fds`` carry) and the secrets, and the list of mount points (for
    :func:`parents_inside` and :func:`read_only_masks`). Goes right after
    ``--ro-bind / /``."""
    sized = "--size" in options
    caps = tmpfs_caps(memory) if sized else None
    argv = ["--dev", "/dev"]
    if caps is not None:
        argv += ["--size", str(caps[1])]
    argv += ["--perms", "1777", "--tmpfs", SHM, "--proc", "/proc"]
    found = masks()
    for mask in found:
        size = ["--size", str(caps[0])] if caps is not None and mask == WRITABLE else []
        argv += [*size, "--perms", "1777" if "tmp" in mask else "0755", "--tmpfs", mask]
    for hidden in sorted({str(Path(p).resolve()) for p in hide if Path(p).is_dir()}, key=len):
        for parent in parents_inside(hidden, found):  # reachable by the unprivileged uid
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--perms", "0755", "--tmpfs", hidden]
        found.append(hidden)
    argv += ["--perms", "0777" if as_root else "0700", "--dir", HOME]
    for name, fd in home_fds:
        argv += ["--perms", "0644", "--file", str(fd), f"{HOME}/{name}"]
    argv += _secret_mounts(secret_fds, sized)
    return argv, found


def read_only_masks(found: Sequence[str]) -> list[str]:
    """``--remount-ro`` for every mask but /tmp, and for /dev: last, once the binds and
    directories inside them exist. Not recursive, so the workspace and /dev/shm mounted
    inside stay writable. A read-only tmpfs can hold nothing new: it costs no RAM."""
    argv: list[str] = []
    for mount in [*found, "/dev"]:
        if mount != WRITABLE:
            argv += ["--remount-ro", mount]
    return argv


secret_pipes = data_pipes  # secrets travel like any other file: through a pipe
