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
import json
import os
import platform
import sqlite3
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from capataz.store import NewTask, Store, TaskState
from pg import ENV_VAR, create_database, drop_database, postgres_admin_url
from queue_harness import (
    BARRIER_TIMEOUT,
    CLAIM_DONE,
    CLAIM_ONLY,
    CLOCK,
    LEASE_SECONDS,
    Out,
    Result,
    report_error,
    run_processes,
    timing,
)
from queue_peers import BARE_LOOP, bench_bare, bench_procrastinate, procrastinate_version

SQLITE_TASKS = 5_000
PG_TASKS = 3_000
SQLITE_PROCESSES = (1, 4)
PG_PROCESSES = (1, 4, 8)
# claim→done cycles/s on SQLite, by number of processes (issue 13).
SQLITE_GOALS = {1: 3_000.0, 4: 1_500.0}
PG_RATIO_WORKERS = (4, 8)  # where capataz is judged against its peers
PG_RATIO_GOAL = 2.0  # x the better Procrastinate shape
PG_BARE_SHARE = 0.5  # of the bare SKIP LOCKED loop
PG_SCALING_GOAL = 1.5  # 8 workers against 1


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
        report_error(results, barrier)


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

        for processes in PG_PROCESSES:
            url = fresh("bare_bench")
            try:
                result = bench_bare(url, count, processes)
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
        bare = _find(results, "postgresql", "bare loop", BARE_LOOP, n)
        if ours is None:
            continue
        best = max(theirs, key=lambda r: r.rate) if theirs else None
        row: dict[str, Any] = {"workers": n, "capataz_per_s": round(ours.rate, 1)}
        if best is not None:
            row |= {
                "procrastinate_best_per_s": round(best.rate, 1),
                "procrastinate_best_shape": best.shape,
                "ratio_to_procrastinate": round(ours.rate / best.rate, 2) if best.rate else None,
            }
        if bare is not None:
            row |= {
                "bare_per_s": round(bare.rate, 1),
                "share_of_bare": round(ours.rate / bare.rate, 2) if bare.rate else None,
            }
        checks = []
        if n in PG_RATIO_WORKERS and best is not None:
            checks.append(ours.rate >= PG_RATIO_GOAL * best.rate)
        if n in PG_RATIO_WORKERS and bare is not None:
            checks.append(ours.rate >= PG_BARE_SHARE * bare.rate)
        row["goal"] = (
            f"capataz on PostgreSQL, {n} worker(s): ≥ {PG_RATIO_GOAL:.0f}x Procrastinate and "
            f"≥ {PG_BARE_SHARE:.0%} of the bare loop"
            if n in PG_RATIO_WORKERS
            else f"capataz on PostgreSQL, {n} worker(s): information"
        )
        row["met"] = bool(checks) and all(checks)
        found.append(row)
    one = _find(results, "postgresql", "capataz", CLAIM_DONE, 1)
    eight = _find(results, "postgresql", "capataz", CLAIM_DONE, 8)
    if one is not None and eight is not None and one.rate:
        found.append(
            {
                "goal": f"capataz on PostgreSQL: 8 workers ≥ {PG_SCALING_GOAL}x 1 worker",
                "scaling": round(eight.rate / one.rate, 2),
                "met": eight.rate >= PG_SCALING_GOAL * one.rate,
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


def _cell(goal: dict[str, Any], key: str, fmt: str = ",.0f") -> str:
    value = goal.get(key)
    return f"{value:>12{fmt}}" if value is not None else f"{'—':>12}"


def _cell(goal: dict[str, Any], key: str, fmt: str = ",.0f") -> str:
    value = goal.get(key)
    return f"{value:>12{fmt}}" if value is not None else f"{'—':>12}"


def side_by_side(results: list[Result]) -> list[str]:
    rows: list[str] = []
    for goal in goals(results):
        if "workers" not in goal:
            continue

        judged = goal["workers"] in PG_RATIO_WORKERS
        verdict = ("met" if goal["met"] else "NOT met") if judged else ""
        rows.append(
            f"{goal['workers']:>7}{_cell(goal, 'capataz_per_s')}"
            f"{_cell(goal, 'procrastinate_best_per_s')}"
            f"{_cell(goal, 'ratio_to_procrastinate', '.2f')}{_cell(goal, 'bare_per_s')}"
            f"{_cell(goal, 'share_of_bare', '.0%')}  {verdict}"
        )
    if not rows:
        return []
    return [
        "PostgreSQL side by side (per second; capataz claim→done, Procrastinate's better "
        f"shape fetch→finish, a bare SKIP LOCKED claim+done; goal at "
        f"{'/'.join(map(str, PG_RATIO_WORKERS))} workers: ≥ {PG_RATIO_GOAL:.0f}x Procrastinate "
        f"and ≥ {PG_BARE_SHARE:.0%} of bare):",
        f"{'workers':>7}{'capataz':>12}{'procr.':>12}{'ratio':>12}{'bare':>12}"
        f"{'of bare':>12}  goal",
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
        elif "scaling" in goal:
            out()
            met = "met" if goal["met"] else "NOT met"
            out(f"goal: {goal['goal']}: {goal['scaling']:.2f}x  {met}")


if __name__ == "__main__":
    main()
