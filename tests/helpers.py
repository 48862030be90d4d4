"""Waiting on conditions, not on the clock: the suite's one way to let time pass.

A test never asserts how long something took (a loaded machine makes any bound a
flake) and never sleeps on the assumption that something has happened by then. It
waits until a condition proves it happened, with a ceiling generous enough that only a
real failure reaches it; pytest-timeout (pyproject) is the last resort behind that.

Imported as ``from tests.helpers import wait_for`` (the suite runs with
``--import-mode=importlib`` and the repository root on ``sys.path``).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Far above what any condition needs on a quiet machine (well under a second to a few
# seconds), far below pytest-timeout's per-test ceiling.
CEILING = 120.0


def wait_for(
    condition: Callable[[], T], what: str, ceiling: float = CEILING, interval: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail with
    ``what`` when ``ceiling`` seconds pass first."""
    deadline = time.monotonic() + ceiling
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {ceiling:g} s: {what}")
        time.sleep(interval)


def host_pids(marker: str) -> list[int]:
    """Pids on the host whose command line contains ``marker`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


class Output:
    """A child's stdout (text mode), read as it comes so that a test can wait for a
    line, and kept whole for the assertions at the end."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._chunks.append(line)

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def finish(self, timeout: float) -> str:
        """Wait for the process to exit and return everything it wrote."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return self.text
