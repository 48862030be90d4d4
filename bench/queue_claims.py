"""Claims per second of capataz's durable queue, and Procrastinate on the same PostgreSQL.

Every figure comes from this one run, on this machine, so the ratios are fair:

* capataz on SQLite (a WAL file in a temp dir), 1 and 4 processes;
* capataz on PostgreSQL, 1, 4 and 8 processes;
* Procrastinate on the same PostgreSQL cluster (its own database), 1, 4 and 8 worker
  processes of concurrency 1 (the shape of capataz's runners), and one worker process
  of concurrency 4 and 8 (Procrastinate's async concurrency).

Each process has its own connection. A capataz cycle is ``claim`` then ``complete(...,
"done")``; a Procrastinate cycle is fetch, run a no-op async task, finish. The clock starts
when every process is connected and released by a barrier, and stops when the last one
finds the queue empty. Each run gets a fresh database, and afterwards the bench checks
that every task was done exactly once (and prints the counts). Goals (docs/performance.md,
issue 13): on SQLite >= 3,000 claim->done/s in one process and >= 1,500/s with 4
processes (claims alone are printed beside them, as information); on PostgreSQL at 4
and 8 workers at least twice Procrastinate's rate in the same run. Prints figures;
asserts nothing.

    python bench/queue_claims.py [--tasks N] [--only sqlite|postgresql] [--json]

PostgreSQL: a throwaway cluster (initdb/pg_ctl) unless $CAPATAZ_BENCH_PG_URL names a
role that may CREATE DATABASE. Procrastinate: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from capataz.store import NewTask, Store, TaskState
from pg import ENV_VAR, create_database, drop_database, postgres_admin_url

SQLITE_TASKS = 5_000
PG_TASKS = 3_000
SQLITE_PROCESSES = (1, 4)
PG_PROCESSES = (1, 4, 8)
# claim→done cycles/s on SQLite, by number of processes (issue 13).
SQLITE_GOALS = {1: 3_000.0, 4: 1_500.0}
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


def _report_error(results: Any, barrier: Any) -> None:
    barrier.abort()  # release the others at once instead of at the timeout
    results.put({"error": traceback.format_exc()})


def capataz_process(index: int, barrier: Any, results: Any, url: str, complete: bool) -> None:
    """One runner process: its own Store (and connection), then claims until the queue
    is empty, completing each task as done when ``complete``."""
    try:
        store = Store.open(url)
        runner = f"bench-{os.getpid()}-{index}"
        # Connect before the clock starts: the first claim should not pay for it.
        store.tasks.list(TaskState.DONE)
        barrier.wait(BARRIER_TIMEOUT)
        ids: list[str] = []
        refused = 0
        started = CLOCK()
        while (task := store.leases.claim(runner, lease_seconds=LEASE_SECONDS)) is not None:
            if not complete or store.leases.complete(task.id, task.fencing_token, "done"):
                ids.append(task.id)
            else:
                refused += 1
        finished = CLOCK()
        store.close()
        results.put({"started": started, "finished": finished, "ids": ids, "refused": refused})
    except Exception:  # noqa: BLE001 - reported to the parent, which prints it
        _report_error(results, barrier)


def procrastinate_app(url: str, pool_size: int) -> tuple[Any, Any]:
    """A Procrastinate 3 app on ``url`` with one no-op async task, ``bench_noop``."""
    from procrastinate import App, PsycopgConnector

    # It warns that an App made in ``__main__`` cannot be found by its CLI's worker;
    # ours are run by this module, which registers the task by name in each process.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

    app = App(connector=PsycopgConnector(conninfo=url, min_size=pool_size, max_size=pool_size))

    async def noop(i: int) -> None:
        return None

    return app, app.task(name="bench_noop")(noop)


def procrastinate_process(
    index: int, barrier: Any, results: Any, url: str, concurrency: int
) -> None:
    """One Procrastinate worker process, run until the queue is empty (``wait=False``)."""
    del index
    try:
        # Connections for the jobs, the LISTEN connection and the heartbeat: the pool
        # is opened (and filled) before the clock starts.
        app, _ = procrastinate_app(url, pool_size=concurrency + 2)

        async def work() -> tuple[float, float]:
            async with app.open_async():
                barrier.wait(BARRIER_TIMEOUT)
                started = CLOCK()
                await app.run_worker_async(
                    concurrency=concurrency, wait=False, install_signal_handlers=False
                )
                return started, CLOCK()

        started, finished = asyncio.run(work())
        results.put({"started": started, "finished": finished})
    except Exception:  # noqa: BLE001 - reported to the parent, which prints it
        _report_error(results, barrier)


def timing(reports: list[dict[str, Any]]) -> tuple[float, str | None]:
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        return 0.0, errors[0]
    return max(r["finished"] for r in reports) - min(r["started"] for r in reports), None


# -- capataz ----------------------------------------------------------------------------


def seed_capataz(url: str, count: int) -> list[str]:
    store = Store.open(url)
    try:
        specs = [
            NewTask(title=f"bench {i}", instruction="true", id=f"bench-{i:06d}")
            for i in range(count)
        ]
        return [task.id for task in store.tasks.add_many(specs, actor="bench")]
    finally:
        store.close()


def check_capataz(
    url: str, ids: list[str], reports: list[dict[str, Any]], complete: bool
) -> tuple[bool, str]:
    """Every task claimed (and completed) exactly once: by the processes' own records,
    and by the store's (status, attempts)."""
    handled = [tid for r in reports for tid in r.get("ids", [])]
    refused = sum(r.get("refused", 0) for r in reports)
    store = Store.open(url)
    try:
        tasks = store.tasks.list()
    finally:
        store.close()
    statuses = Counter(task.status.value for task in tasks)
    attempts = Counter(task.attempts for task in tasks)
    want = TaskState.DONE if complete else TaskState.RUNNING
    verb = "done" if complete else "claimed"
    ok = (
        len(handled) == len(ids)
        and set(handled) == set(ids)
        and refused == 0
        and statuses == Counter({want.value: len(ids)})
        and attempts == Counter({1: len(ids)})
    )
    detail = (
        f"{len(ids)} tasks, {len(handled)} {verb} by the processes "
        f"({len(set(handled))} distinct, {refused} refused); in the store: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + "; attempts "
        + ", ".join(f"{a}x{n}" for a, n in sorted(attempts.items()))
    )
    return ok, detail


def bench_capataz(database: str, url: str, count: int, processes: int, complete: bool) -> Result:
    ids = seed_capataz(url, count)
    reports = run_processes(capataz_process, processes, lambda _: (url, complete))
    seconds, error = timing(reports)
    ok, detail = (False, "not checked") if error else check_capataz(url, ids, reports, complete)
    return Result(
        database=database,
        system="capataz",
        workload=CLAIM_DONE if complete else CLAIM_ONLY,
        processes=processes,
        concurrency=1,
        tasks=count,
        seconds=seconds,
        exactly_once=ok,
        check=detail,
        error=error,
    )


# -- Procrastinate ----------------------------------------------------------------------


async def seed_procrastinate(url: str, count: int) -> None:
    app, noop = procrastinate_app(url, pool_size=2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await noop.batch_defer_async(*({"i": i} for i in range(count)))


def check_procrastinate(url: str, count: int) -> tuple[bool, str]:
    """Every job succeeded, and was started exactly once (its ``started`` events)."""
    with psycopg.connect(url) as conn:
        statuses: dict[str, int] = dict(
            conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
            ).fetchall()
        )
        starts = Counter(
            n
            for (n,) in conn.execute(
                "SELECT count(e.id) FROM procrastinate_jobs j LEFT JOIN procrastinate_events e"
                " ON e.job_id = j.id AND e.type = 'started' GROUP BY j.id"
            ).fetchall()
        )
    ok = statuses == {"succeeded": count} and starts == Counter({1: count})
    detail = (
        f"{count} jobs; "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + "; started "
        + ", ".join(f"{k}x{n}" for k, n in sorted(starts.items()))
    )
    return ok, detail


def bench_procrastinate(url: str, count: int, processes: int, concurrency: int) -> Result:
    asyncio.run(seed_procrastinate(url, count))
    reports = run_processes(procrastinate_process, processes, lambda _: (url, concurrency))
    seconds, error = timing(reports)
    ok, detail = (False, "not checked") if error else check_procrastinate(url, count)
    return Result(
        database="postgresql",
        system="procrastinate",
        workload=FETCH_FINISH,
        processes=processes,
        concurrency=concurrency,
        tasks=count,
        seconds=seconds,
        exactly_once=ok,
        check=detail,
        error=error,
    )


def procrastinate_version() -> str | None:
    try:
        return metadata.version("procrastinate")
    except metadata.PackageNotFoundError:
        return None


# -- the runs ---------------------------------------------------------------------------


def announce(out: Out, result: Result) -> None:
    head = (
        f"[{result.database} {result.system} {result.workload}, {result.shape}] "
        f"{result.tasks} tasks"
    )
    if result.error:
        out(f"{head}: FAILED\n{result.error.rstrip()}")
        return
    out(f"{head} in {result.seconds:.2f} s = {result.rate:,.0f}/s")
    verdict = "ok" if result.exactly_once else "FAILED"
    out(f"    exactly-once: {verdict} ({result.check})")


def run_sqlite(out: Out, count: int) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="capataz-bench-sqlite-") as tmp:
        plan = [(1, False), *((n, True) for n in SQLITE_PROCESSES), (4, False)]
        for run, (processes, complete) in enumerate(plan):
            url = f"sqlite:///{Path(tmp) / f'run{run}.db'}"
            result = bench_capataz("sqlite", url, count, processes, complete)
            announce(out, result)
            results.append(result)
    return results


def run_postgresql(out: Out, count: int) -> tuple[list[Result], dict[str, str]]:
    results: list[Result] = []
    info: dict[str, str] = {}
    with postgres_admin_url() as admin:
        with psycopg.connect(admin) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = str(row[0]) if row else "?"
        info["postgresql_source"] = ENV_VAR if os.environ.get(ENV_VAR) else "throwaway cluster"

        def fresh(prefix: str) -> str:
            return create_database(admin, prefix)

        plan: list[tuple[int, bool]] = [(1, False), *((n, True) for n in PG_PROCESSES)]
        for processes, complete in plan:
            url = fresh("capataz_bench")
            try:
                result = bench_capataz("postgresql", url, count, processes, complete)
            finally:
                drop_database(admin, url)
            announce(out, result)
            results.append(result)

        version = procrastinate_version()
        if version is None:
            out("procrastinate is not installed: pip install -e '.[bench]' (skipped)")
            return results, info
        info["procrastinate"] = version
        shapes = [(n, 1) for n in PG_PROCESSES] + [(1, n) for n in PG_PROCESSES if n > 1]
        for processes, concurrency in shapes:
            url = fresh("procrastinate_bench")
            try:
                result = bench_procrastinate(url, count, processes, concurrency)
            finally:
                drop_database(admin, url)
            announce(out, result)
            results.append(result)
    return results, info


# -- the report -------------------------------------------------------------------------


def _find(
    results: list[Result], database: str, system: str, workload: str, processes: int
) -> Result | None:
    for result in results:
        if (
            (result.database, result.system, result.workload, result.processes)
            == (database, system, workload, processes)
            and result.concurrency == 1
            and not result.error
        ):
            return result
    return None


def goals(results: list[Result]) -> list[dict[str, Any]]:
    """The goals, each with the figures it is judged on."""
    found: list[dict[str, Any]] = []
    for n, goal in SQLITE_GOALS.items():
        cycle = _find(results, "sqlite", "capataz", CLAIM_DONE, n)
        alone = _find(results, "sqlite", "capataz", CLAIM_ONLY, n)
        if cycle is None and alone is None:
            continue
        found.append(
            {
                "goal": (
                    f"capataz on SQLite, {n} process{'es' if n > 1 else ''}: "
                    f"≥ {goal:,.0f} claim→done/s"
                ),
                "claim_done_per_s": round(cycle.rate, 1) if cycle else None,
                "claims_alone_per_s": round(alone.rate, 1) if alone else None,  # information
                "met": bool(cycle and cycle.rate >= goal),
            }
        )
    for n in PG_PROCESSES:
        ours = _find(results, "postgresql", "capataz", CLAIM_DONE, n)
        theirs = [
            r for r in results if r.system == "procrastinate" and r.workers == n and not r.error
        ]
        if ours is None or not theirs:
            continue
        best = max(theirs, key=lambda r: r.rate)
        found.append(
            {
                "goal": f"capataz on PostgreSQL, {n} worker(s): ≥ Procrastinate",
                "capataz_per_s": round(ours.rate, 1),
                "procrastinate_best_per_s": round(best.rate, 1),
                "procrastinate_best_shape": best.shape,
                "ratio": round(ours.rate / best.rate, 2) if best.rate else None,
                "met": ours.rate >= best.rate,
            }
        )
    return found


def table(results: list[Result]) -> list[str]:
    lines = [
        f"{'database':<11}{'system':<15}{'workload':<14}{'workers':<13}"
        f"{'tasks':>6}{'seconds':>9}{'per s':>9}  exactly-once",
    ]
    lines.append("-" * len(lines[0]))
    for r in results:
        if r.error:
            figures = f"{r.tasks:>6}{'—':>9}{'—':>9}  (failed: see above)"
        else:
            once = "ok" if r.exactly_once else "FAILED"
            figures = f"{r.tasks:>6}{r.seconds:>9.2f}{r.rate:>9,.0f}  {once}"
        lines.append(f"{r.database:<11}{r.system:<15}{r.workload:<14}{r.shape:<13}{figures}")
    return lines


def side_by_side(results: list[Result]) -> list[str]:
    rows: list[str] = []
    for n in PG_PROCESSES:
        ours = _find(results, "postgresql", "capataz", CLAIM_DONE, n)
        procs = _find(results, "postgresql", "procrastinate", FETCH_FINISH, n)
        async_ = next(
            (
                r
                for r in results
                if r.system == "procrastinate"
                and r.processes == 1
                and r.concurrency == n
                and n > 1
                and not r.error
            ),
            None,
        )
        if ours is None or (procs is None and async_ is None):
            continue
        best = max((r.rate for r in (procs, async_) if r), default=0.0)

        def cell(r: Result | None) -> str:
            return f"{r.rate:>14,.0f}" if r else f"{'—':>14}"

        verdict = "met" if ours.rate >= best else "NOT met"
        rows.append(
            f"{n:>7}{ours.rate:>10,.0f}{cell(procs)}{cell(async_)}"
            f"{ours.rate / best if best else 0:>8.2f}x  {verdict}"
        )
    if not rows:
        return []
    return [
        "PostgreSQL side by side (per second; capataz claim→done vs Procrastinate "
        "fetch→finish; goal: capataz ≥ the better Procrastinate figure):",
        f"{'workers':>7}{'capataz':>10}{'procr. N proc':>14}{'procr. 1xN':>14}{'ratio':>9}  goal",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        type=int,
        help=f"tasks per run (default {SQLITE_TASKS:,} on SQLite, {PG_TASKS:,} on PostgreSQL)",
    )
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    out = Out(args.json)

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
    }
    results: list[Result] = []
    started = CLOCK()
    if args.only in (None, "sqlite"):
        results += run_sqlite(out, args.tasks or SQLITE_TASKS)
    if args.only in (None, "postgresql"):
        try:
            pg_results, pg_info = run_postgresql(out, args.tasks or PG_TASKS)
        except (OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            out(f"PostgreSQL benchmarks skipped: {exc}")
        else:
            results += pg_results
            info.update(pg_info)
    info["bench_seconds"] = round(CLOCK() - started, 1)
    found = goals(results)

    if args.json:
        report = {"info": info, "results": [r.as_json() for r in results], "goals": found}
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return

    out()
    out("capataz queue claims — " + ", ".join(f"{key} {value}" for key, value in info.items()))
    for line in table(results):
        out(line)
    comparison = side_by_side(results)
    if comparison:
        out()
        for line in comparison:
            out(line)
    for goal in found:
        if "claim_done_per_s" in goal:
            out()
            cycle, alone = goal["claim_done_per_s"], goal["claims_alone_per_s"]
            out(f"goal: {goal['goal']}")
            if cycle is not None:
                met = "met" if goal["met"] else "NOT met"
                out(f"    claim→done cycles:   {cycle:>9,.0f}/s  {met}")
            else:
                out("    claim→done cycles:           —    (not measured: NOT met)")
            if alone is not None:
                out(f"    claims alone:        {alone:>9,.0f}/s  (information, not the goal)")


if __name__ == "__main__":
    main()
