"""A real ``capataz serve`` on loopback for the tests that need one, started and
stopped one way: the API fixtures, the panel's browser tests, remote runners and the
red-team leak check all go through :func:`start_serve` and :func:`stop_serve`.

Start-up waits on ``/health`` answering (or the process dying, whose stderr is then
the error), with a ceiling generous enough for a machine loaded by other suites."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

__all__ = ["free_port", "serving", "start_serve", "stop_serve", "wait_healthy"]

START_CEILING = 180.0  # seconds; it took over 30 s on a machine loaded by CPU burners


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    """Until ``base``/health answers 200; the server's stderr when it exits instead."""
    deadline = time.monotonic() + START_CEILING
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"capataz serve exited: {proc.communicate()[1]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"capataz serve did not answer /health in {START_CEILING:.0f} s")


def start_serve(
    repo: Path, env: Mapping[str, str], *, port: int | None = None, keep_stdout: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """``capataz serve`` in ``repo`` on ``port`` (a free one by default), healthy;
    returns the process and its base URL. stderr is always kept (it explains a start
    that failed); stdout only when asked."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "capataz", "serve", "--port", str(port)],
        cwd=repo,
        env=dict(env),
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
    except BaseException:
        stop_serve(proc)
        raise
    return proc, base


def stop_serve(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@contextlib.contextmanager
def serving(repo: Path, env: Mapping[str, str]) -> Iterator[str]:
    """A server for the ``with`` block; yields its base URL."""
    proc, base = start_serve(repo, env)
    try:
        yield base
    finally:
        stop_serve(proc)
