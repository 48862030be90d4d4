"""The "none" backend: the same supervision without isolation, for machines without
user namespaces or for debugging a sandbox problem.

The command gets the same clean environment (with a throwaway HOME holding only the
agent's git identity), the same rlimits,
the same timeouts, disk watch and output handling (no cgroup, no tmpfs caps), runs in
the workspace and in its own process group, which is killed when it ends. That is all:
it sees and can write everything the runner's user can, reaches the network, and a
process that calls ``setsid`` (or double-forks into a new session) leaves the group and
survives the run. Also, when
capataz runs as root the process limit does not bind at all. Hence "none" is opt-in,
and the caller prints a warning when it is chosen.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from capataz.config import SandboxOptions
from capataz.errors import SandboxError
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, OutputSink, SandboxSpec
from capataz.sandbox.cache import held_cache
from capataz.sandbox.disk import DiskWatch
from capataz.sandbox.gitenv import GITCONFIG, GITCONFIG_NAME
from capataz.sandbox.network import NetworkPolicy
from capataz.sandbox.outcome import build_result
from capataz.sandbox.process import clean_env, processes_in_use, supervise

__all__ = ["UnsandboxedSandbox"]


def _write_secret_files(files: dict[str, str]) -> str:
    """A private directory (0700, in RAM under /dev/shm when there is one) with one 0400
    file per secret; removed when the run ends. Without a sandbox this is the most
    privacy there is: only the runner's own user can read it, for the run's length."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    directory = tempfile.mkdtemp(prefix="capataz-secrets-", dir=where)
    try:
        for name, value in files.items():
            fd = os.open(Path(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, value.encode("utf-8"))
            finally:
                os.close(fd)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


class UnsandboxedSandbox:
    """Runs commands directly on the host, supervised but not isolated."""

    name = "none"

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()  # accepted for a uniform factory; unused

    def run(
        self,
        spec: SandboxSpec,
        on_output: OutputSink,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run ``spec.argv`` in the workspace; a missing command is a failed run (127).
        An allowlist is refused: without a network namespace nothing can enforce it."""
        if isinstance(spec.network, NetworkPolicy):
            raise SandboxError(
                f'{spec.network.key} lists hosts, which sandbox = "none" cannot enforce',
                fix='use sandbox = "bwrap", or network = true (full network) / false (none)',
            )
        workspace = Path(spec.workspace)
        if not workspace.is_dir():
            raise SandboxError(
                f"workspace {workspace} is not a directory", fix="create it before running"
            )
        processes = spec.limits.processes
        if processes is not None and os.geteuid() != 0:
            processes += processes_in_use(os.getuid())  # the limit counts the whole uid
        home = tempfile.mkdtemp(prefix="capataz-home-")
        Path(home, GITCONFIG_NAME).write_text(GITCONFIG, encoding="utf-8")  # git identity
        held = ExitStack()
        cache = held.enter_context(held_cache(spec.cache, uid=None, limit=spec.limits.disk))
        if cache is not None:  # the throwaway HOME's .cache is the agent's persistent one
            Path(home, ".cache").symlink_to(cache)
        disk = None
        if spec.limits.disk is not None:
            disk = DiskWatch(workspace, spec.limits.disk, also=cache)
        secrets = _write_secret_files(spec.secret_files) if spec.secret_files else None
        try:
            files = {f"{n}_FILE": str(Path(secrets, n)) for n in spec.secret_files if secrets}
            run = supervise(
                spec.argv,
                cwd=workspace,
                env=clean_env(home, {**spec.env, **files}),
                limits=spec.limits,
                on_output=on_output,
                should_stop=should_stop,
                processes=processes,
                disk=disk,
            )
        except OSError as exc:
            on_output(
                OutputLine(datetime.now(UTC), "err", f"capataz: cannot run {spec.argv[0]!r}: {exc}")
            )
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return ExecResult(
                outcome=ExecOutcome.FAILED,
                exit_code=code,
                signal=None,
                wall_seconds=0.0,
                cpu_seconds=0.0,
                peak_memory_bytes=0,
                output_bytes=0,
                output_truncated=False,
                leftover_processes=[],
                detail=f"cannot run {spec.argv[0]!r}: {exc.strerror or exc}",
            )
        finally:
            held.close()
            shutil.rmtree(home, ignore_errors=True)  # removes the link, not the cache
            if secrets is not None:
                shutil.rmtree(secrets, ignore_errors=True)
        over = None
        if disk is not None and (run.stopped is ExecOutcome.DISK_LIMIT or disk.exceeded()):
            over = disk.written
        return build_result(run, spec.limits, over_disk_limit=over)

    def check(self) -> list[str]:
        """Nothing can be missing: this backend needs only the host itself."""
        return []
