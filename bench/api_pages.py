"""Paged API lists over a big store: how long ``capataz serve`` takes to answer the
lists an operator (and the panel) reads, with 10,000 tasks and 50,000 runs.

The store is filled directly through the schema's tables (SQLAlchemy Core bulk inserts:
a bench needs volume, not the audit trail), migrated first by ``Store.open``. Tasks are
spread over the states (most done, some ready, pending with dependencies, failed,
blocked, cancelled), five runs per task on average. Then ``capataz serve`` runs as a
subprocess on loopback with an admin token, and one keep-alive client times each
request (2 warm-ups, then ``--requests``): the first page of ``GET /ops/tasks`` at its
default limit (1,000 tasks), a status-filtered page, a deep page
(``offset=9000&limit=50``), the first page of ``GET /runs``, and the panel at ``GET /``
(noted when the server has no panel). Figures are wall-clock times seen by the client:
routing, auth, SQL, JSON and loopback HTTP. The machine's load average is printed: on a
busy machine the p95 measures the scheduler too. Goal: under 300 ms each.
Prints figures; asserts nothing.

    python bench/api_pages.py [--tasks 10000] [--runs 50000] [--requests 20] [--postgres]

PostgreSQL: a throwaway cluster (see bench/pg.py) unless $CAPATAZ_BENCH_PG_URL is set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving

from tests.serving import serving

from capataz.store import RunStatus, Store, TaskState
from capataz.store.schema import runs, task_dependencies, tasks
from pg import create_database, drop_database, postgres_admin_url

GOAL_MS = 300.0
CHUNK = 2_000
CONFIG = "[server]\nrate_limit = 100000\nrate_burst = 100000\n"
# Most tasks of a long-lived queue have ended; the rest are spread over the live states.
STATES = (
    [TaskState.DONE] * 12
    + [TaskState.READY] * 2
    + [TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED, TaskState.RUNNING]
)
PENDING_EVERY = 10  # every tenth task waits for the one before it


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def fill(url: str, n_tasks: int, n_runs: int) -> str:
    """Migrate, bulk-insert the tasks, their edges and runs; returns an admin token."""
    store = Store.open(url)
    try:
        token = store.tokens.create("admin", "bench")
        start = datetime.now(UTC) - timedelta(days=30)
        task_rows: list[dict[str, Any]] = []
        edges: list[dict[str, str]] = []
        for n in range(n_tasks):
            created = start + timedelta(seconds=n)
            state = STATES[n % len(STATES)]
            if n % PENDING_EVERY == PENDING_EVERY - 1:
                state = TaskState.PENDING
                edges.append({"task_id": f"t-{n:06d}", "depends_on_id": f"t-{n - 1:06d}"})
            task_rows.append(
                {
                    "id": f"t-{n:06d}",
                    "title": f"task {n}: refactor module {n % 97}",
                    "instruction": f"Refactor module {n % 97} and keep the tests green. " * 3,
                    "agent": "shell",
                    "status": state.value,
                    "priority": n % 5,
                    "attempts": 1,
                    "max_attempts": 3,
                    "labels": ["bench", f"group-{n % 7}"],
                    "run_after": created,
                    "idempotency_key": None,
                    "allow_high": False,
                    "base_commit": None,
                    "fencing_token": 5,
                    "created_at": created,
                    "updated_at": created + timedelta(minutes=5),
                    "reason": None,
                }
            )
        run_rows = [
            {
                "id": f"run-{n:07d}",
                "task_id": f"t-{n % n_tasks:06d}",
                "attempt": 1 + n // n_tasks,
                "runner_id": f"r-{n % 8}",
                "fencing_token": 1 + n // n_tasks,
                "status": RunStatus.FINISHED.value,
                "outcome": TaskState.DONE.value if n % 4 else TaskState.FAILED.value,
                "result": "landed" if n % 4 else "rejected",
                "decision": None,
                "reason": None,
                "started_at": start + timedelta(seconds=n % n_tasks, minutes=n // n_tasks),
                "ended_at": start + timedelta(seconds=n % n_tasks, minutes=n // n_tasks + 1),
                "exit_code": 0,
                "wall_seconds": 42.0,
                "cpu_seconds": 3.5,
                "peak_memory_bytes": 50_000_000,
                "log_tail": None,
            }
            for n in range(n_runs)
        ]
        with store.engine.begin() as conn:
            for table, rows in ((tasks, task_rows), (task_dependencies, edges), (runs, run_rows)):
                for chunk in _chunks(rows):
                    conn.execute(table.insert(), chunk)
    finally:
        store.close()
    return token


@contextlib.contextmanager
def serve(url: str, workdir: Path) -> Iterator[str]:
    """``capataz serve`` over ``url`` in a fresh repository; yields its base URL."""
    repo = workdir / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    (repo / "capataz.toml").write_text(CONFIG)
    with serving(repo, {**os.environ, "CAPATAZ_DATABASE_URL": url}) as base:
        yield base


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def measure(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    """Median and p95 milliseconds of ``requests`` GETs of ``path`` (after 2 warm-ups),
    with the status, the body size and X-Total-Count of the last answer."""
    response = client.get(path)
    client.get(path)
    times: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        response.read()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "path": path,
        "status": response.status_code,
        "bytes": len(response.content),
        "total": response.headers.get("X-Total-Count", "-"),
        "median": statistics.median(times),
        "p95": percentile(times, 0.95),
    }


PATHS = (
    "/ops/tasks",
    "/ops/tasks?status=ready",
    "/ops/tasks?offset=9000&limit=50",
    "/runs",
    "/",
)


def run(url: str, database: str, n_tasks: int, n_runs: int, requests: int) -> None:
    started = time.perf_counter()
    token = fill(url, n_tasks, n_runs)
    filled = time.perf_counter() - started
    print(f"{database}: {n_tasks:,} tasks and {n_runs:,} runs inserted in {filled:.1f} s")
    with (
        tempfile.TemporaryDirectory(prefix="capataz-bench-api-") as tmp,
        serve(url, Path(tmp)) as base,
    ):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            results = [measure(client, path, requests) for path in PATHS]
    print(f"  {'request':<34} {'status':>6} {'KiB':>8} {'total':>7} {'median':>9} {'p95':>9}")
    for r in results:
        verdict = "ok" if r["p95"] < GOAL_MS else "SLOW"
        if r["path"] == "/" and r["status"] == 404:
            verdict = "no panel in this server (404): not measured"
        print(
            f"  GET {r['path']:<30} {r['status']:>6} {r['bytes'] / 1024:>8.1f} {r['total']:>7} "
            f"{r['median']:>7.1f}ms {r['p95']:>7.1f}ms  {verdict}"
        )
    print(f"  goal: p95 < {GOAL_MS:.0f} ms; {requests} requests each after 2 warm-ups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    if args.postgres:
        with postgres_admin_url() as admin:
            url = create_database(admin, "bench_api")
            try:
                run(url, "PostgreSQL", args.tasks, args.runs, args.requests)
            finally:
                drop_database(admin, url)
        return
    with tempfile.TemporaryDirectory(prefix="capataz-bench-db-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'capataz.db'}"
        run(url, "SQLite", args.tasks, args.runs, args.requests)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
