"""The peers capataz's queue is compared with on the same PostgreSQL: Procrastinate 3
(its own schema, no-op async jobs) and a bare ``FOR UPDATE SKIP LOCKED`` loop (one
table, claim and done, autocommit: the floor any queue on PostgreSQL pays). See
queue_claims.py."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from importlib import metadata
from typing import Any

import psycopg

from queue_harness import (
    BARRIER_TIMEOUT,
    CLOCK,
    FETCH_FINISH,
    Result,
    report_error,
    run_processes,
    timing,
)


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
        report_error(results, barrier)


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


# -- a bare SKIP LOCKED loop ------------------------------------------------------------

BARE_LOOP = "claim+done"
_BARE_SCHEMA = (
    "CREATE TABLE bare_jobs (id bigserial PRIMARY KEY, status text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(), worker text)",
    "CREATE INDEX bare_jobs_ready ON bare_jobs (status, id)",
)
_BARE_CLAIM = (
    "UPDATE bare_jobs SET status = 'running', worker = %s WHERE id = ("
    "SELECT id FROM bare_jobs WHERE status = 'ready' ORDER BY id LIMIT 1"
    " FOR UPDATE SKIP LOCKED) RETURNING id"
)
_BARE_DONE = "UPDATE bare_jobs SET status = 'done' WHERE id = %s"


def bare_process(index: int, barrier: Any, results: Any, url: str) -> None:
    """One process of the bare loop: its own connection in autocommit, claim then done
    (each one statement, one round trip) until nothing is ready."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            worker = f"bare-{index}"
            barrier.wait(BARRIER_TIMEOUT)
            done: list[int] = []
            started = CLOCK()
            while (row := conn.execute(_BARE_CLAIM, (worker,)).fetchone()) is not None:
                conn.execute(_BARE_DONE, (row[0],))
                done.append(int(row[0]))
            finished = CLOCK()
        results.put({"started": started, "finished": finished, "ids": done})
    except Exception:  # noqa: BLE001 - reported to the parent, which prints it
        report_error(results, barrier)


def bench_bare(url: str, count: int, processes: int) -> Result:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _BARE_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO bare_jobs (status) SELECT 'ready' FROM generate_series(1, %s)", (count,)
        )
        conn.execute("ANALYZE bare_jobs")
    reports = run_processes(bare_process, processes, lambda _: (url,))
    seconds, error = timing(reports)
    ok, detail = False, "not checked"
    if error is None:
        handled = Counter(job for r in reports for job in r.get("ids", []))
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE status = 'done') FROM bare_jobs")
            done = int(row.fetchone()[0])  # type: ignore[index]
        ok = len(handled) == count and set(handled.values()) == {1} and done == count
        detail = f"{count} jobs, {len(handled)} distinct done by the processes, {done} done"
    return Result(
        database="postgresql",
        system="bare loop",
        workload=BARE_LOOP,
        processes=processes,
        concurrency=1,
        tasks=count,
        seconds=seconds,
        exactly_once=ok,
        check=detail,
        error=error,
    )
