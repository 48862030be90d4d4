"""What the queue benchmarks share: a result row, and N processes released together
behind a barrier, each reporting when it started and finished (see queue_claims.py)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

LEASE_SECONDS = 600.0  # far beyond any run: no lease may expire and be rescued mid-bench
BARRIER_TIMEOUT = 180.0
# Processes compare time.monotonic() readings: on Linux it is CLOCK_MONOTONIC, one clock
# for the whole machine.
CLOCK = time.monotonic

CLAIM_DONE = "claim→done"
CLAIM_ONLY = "claim only"
FETCH_FINISH = "fetch→finish"
# Workers are forked: spawning re-imports capataz, SQLAlchemy and Alembic in every worker
# (about a second each on 2 busy cores; outside the timed part, but it adds up). Forking
# is safe here because the parent holds no connection and runs no thread when it forks:
# every Store it opened is closed (its pool disposed), every psycopg connection closed,
# every event loop finished.
_MP = mp.get_context("fork")


@dataclass
class Result:
    database: str
    system: str
    workload: str
    processes: int
    concurrency: int  # per process
    tasks: int
    seconds: float
    exactly_once: bool
    check: str
    error: str | None = None

    @property
    def workers(self) -> int:
        return self.processes * self.concurrency

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    @property
    def shape(self) -> str:
        if self.concurrency == 1:
            return f"{self.processes} proc"
        return f"{self.processes} proc x {self.concurrency}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["workers"] = self.workers
        data["per_second"] = round(self.rate, 1)
        return data


class Out:
    """Progress lines go to stdout with the table, or to stderr when stdout is JSON."""

    def __init__(self, json_mode: bool) -> None:
        self.stream = sys.stderr if json_mode else sys.stdout

    def __call__(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)


# -- running N processes behind a barrier ---------------------------------------------


def run_processes(
    target: Callable[..., None], count: int, args: Callable[[int], tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Start ``count`` processes of ``target(index, barrier, results, *args(index))``;
    each puts one dict (``started``, ``finished``, and what it did, or ``error``) on
    ``results``. Returns the dicts."""
    barrier = _MP.Barrier(count)
    results: Any = _MP.Queue()
    procs = [
        _MP.Process(target=target, args=(i, barrier, results, *args(i)), daemon=True)
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    reports: list[dict[str, Any]] = []
    deadline = CLOCK() + BARRIER_TIMEOUT + 600
    while len(reports) < count:
        try:
            reports.append(results.get(timeout=1.0))
        except queue.Empty:
            if CLOCK() > deadline or not any(p.is_alive() for p in procs):
                # Whatever the last ones put before exiting is in the pipe by now.
                with contextlib.suppress(queue.Empty):
                    while len(reports) < count:
                        reports.append(results.get(timeout=1.0))
                if len(reports) < count:
                    codes = [p.exitcode for p in procs]
                    reports.append({"error": f"a process died without reporting ({codes})"})
                break
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return reports


def report_error(results: Any, barrier: Any) -> None:
    barrier.abort()  # release the others at once instead of at the timeout
    results.put({"error": traceback.format_exc()})


def timing(reports: list[dict[str, Any]]) -> tuple[float, str | None]:
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        return 0.0, errors[0]
    return max(r["finished"] for r in reports) - min(r["started"] for r in reports), None
