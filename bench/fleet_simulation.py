"""A fleet of remote runners against one control plane, on PostgreSQL, in one run.

``--runners`` simulated runners (asyncio tasks of this process, each with its own
``httpx.AsyncClient`` and so its own connections: real HTTP) speak the remote runner's
protocol to a real ``capataz serve`` over a throwaway PostgreSQL (``bench/pg.py``):
register, heartbeat every ``--heartbeat`` seconds (the runner and every lease it
holds, as the real heartbeat loop does), claim with ``?wait=20`` (the long poll),
send the run's steps and log chunks as the outbox does (``POST /runner/runs/{id}/
records``, numbered, one batch every ``--log-every`` seconds while the task "works"
for ``--think`` seconds), then complete. The simulation replaces the runner process,
not the protocol: the same routes and bodies (:mod:`capataz.runner.protocol`).

It prints, per route, p50/p95/p99 latency seen by the clients; tasks completed per
minute; the exactly-once check (from the clients' accepted completes and from the
database: no task completed twice, none lost); the server process's CPU seconds (from
``/proc/<pid>/stat``); PostgreSQL's connections to the database (``pg_stat_activity``,
sampled every second: the most seen, and by state); and the machine's load. This
process's own CPU is printed too: on a small machine the simulated fleet competes with
the server for the same cores. Goals (docs/performance.md): >= 1,000 tasks/min with
p99 < 50 ms for claim, heartbeat and log. Prints figures only.

    python bench/fleet_simulation.py [--runners 200] [--seconds 60] [--think 9]
        [--tasks N] [--heartbeat 10] [--log-every 2] [--profile DIR]

``--profile DIR`` starts the server under ``bench/_profiled_serve.py`` (cProfile in
every thread that runs a request, and the event loop's), which writes ``DIR/server.prof``
and prints the top functions when the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving, bench

from bench.pg import create_database, drop_database, postgres_admin_url
from bench.remote_runners import _project
from tests.serving import free_port, stop_serve, wait_healthy

from capataz.store import NewTask, Store

CLAIM_WAIT = 20.0  # what the real runner asks (capataz.runner.remote.CLAIM_WAIT)
ROUTES = ("claim", "heartbeat", "log", "complete", "register")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """What every simulated runner records (one event loop: no locks needed)."""

    latency: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    completed: list[tuple[str, int]] = field(default_factory=list)  # (task, token) accepted
    refused: list[tuple[str, int, int]] = field(default_factory=list)  # (task, token, status)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    claims_empty: int = 0
    first_claim: float | None = None
    last_complete: float = 0.0


class SimulatedRunner:
    """One remote runner: the protocol of :class:`capataz.runner.remote.RemoteQueue`
    without the pipeline (a task's work is ``think`` seconds of sleep)."""

    def __init__(self, n: int, base: str, token: str, args: argparse.Namespace, fleet: Fleet):
        self.n = n
        self.args = args
        self.fleet = fleet
        self.client = httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0 + CLAIM_WAIT, connect=5.0),
        )
        self.id = ""
        self.leases: dict[str, int] = {}  # task -> fencing token, heartbeated every beat

    async def call(self, route: str, path: str, body: dict[str, object], **params: float) -> object:
        """POST ``body`` to ``path``; the answer's ``data``, timed under ``route``. A
        transport error or a 5xx is counted and answered as None (the real runner
        retries); a 409 raises :class:`Stale`."""
        started = time.perf_counter()
        try:
            response = await self.client.post(path, json=body, params=params or None)
        except httpx.TransportError as exc:
            self.fleet.errors[f"{route}: {type(exc).__name__}"] += 1
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code == 409:
            raise Stale(response.status_code)
        if response.status_code >= 300:
            self.fleet.errors[f"{route}: HTTP {response.status_code}"] += 1
            return None
        data = response.json()["data"]
        if route != "claim" or data is not None:  # an empty long poll is waiting, not latency
            self.fleet.latency[route].append(elapsed)
        return data

    async def run(self, stop_at: float, stop: asyncio.Event) -> None:
        body = {"name": f"sim-{self.n}", "hostname": "sim", "pid": self.n, "concurrency": 1}
        while not self.id:
            found = await self.call("register", "/runner/register", body)
            self.id = found["runner_id"] if isinstance(found, dict) else ""
        beat = asyncio.create_task(self._heartbeats())
        try:
            while time.monotonic() < stop_at and not stop.is_set():
                claimed = await self.call(
                    "claim",
                    "/runner/claim",
                    {"runner_id": self.id, "lease_seconds": 30.0, "claim_key": uuid.uuid4().hex},
                    wait=min(CLAIM_WAIT, max(0.0, stop_at - time.monotonic())),
                )
                if not isinstance(claimed, dict):
                    self.fleet.claims_empty += 1
                    continue
                if self.fleet.first_claim is None:
                    self.fleet.first_claim = time.monotonic()
                await self._work(claimed)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self.call("heartbeat", f"/runner/{self.id}/stopped", {})
            await self.client.aclose()

    async def _work(self, claimed: dict[str, object]) -> None:
        """The task's run as the outbox sends it, then the report."""
        task, token, run = str(claimed["id"]), int(str(claimed["fencing_token"])), claimed["run_id"]
        self.leases[task] = token
        seq = 0

        def records(*items: dict[str, object]) -> dict[str, object]:
            nonlocal seq
            out = []
            for item in items:
                seq += 1
                out.append({**item, "seq": seq})
            return {"records": out}

        path = f"/runner/runs/{run}/records"
        try:
            await self.call(
                "log", path, records({"kind": "step", "phase": "execute", "status": "started"})
            )
            think = self.args.think * random.uniform(0.5, 1.5)
            ends = time.monotonic() + think
            while (left := ends - time.monotonic()) > 0:
                await asyncio.sleep(min(left, self.args.log_every))
                line = {"kind": "log", "text": f"{task}: working, {left:.1f} s left\n" * 3}
                await self.call("log", path, records(line))
            await self.call(
                "log",
                path,
                records(
                    {"kind": "log", "text": f"{task}: done\n"},
                    {"kind": "step", "phase": "execute", "status": "finished", "outcome": "ok"},
                ),
            )
            done = {"fencing_token": token, "state": "done", "reason": "fleet simulation"}
            answer = await self.call("complete", f"/runner/tasks/{task}/complete", done)
            if isinstance(answer, dict) and answer.get("accepted"):
                self.fleet.completed.append((task, token))
                self.fleet.last_complete = time.monotonic()
        except Stale as exc:
            self.fleet.refused.append((task, token, exc.status))
        finally:
            self.leases.pop(task, None)

    async def _heartbeats(self) -> None:
        """Every ``--heartbeat`` seconds (the first after a random part of it, so the
        fleet does not beat in step): the runner, then each lease it holds."""
        await asyncio.sleep(random.uniform(0, self.args.heartbeat))
        while True:  # until the runner ends (cancelled): tasks at work after the stop too
            await self.call("heartbeat", f"/runner/{self.id}/heartbeat", {})
            for task, token in list(self.leases.items()):
                with contextlib.suppress(Stale):
                    body = {"fencing_token": token, "lease_seconds": 30.0}
                    await self.call("heartbeat", f"/runner/tasks/{task}/heartbeat", body)
            await asyncio.sleep(self.args.heartbeat)


class Stale(Exception):
    """409: the lease is no longer this runner's."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ConnectionSampler:
    """``pg_stat_activity`` for the bench's database every second, in a thread: the
    most connections seen at once, and by state at that moment."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.most = 0
        self.states: dict[str, int] = {}
        # What the active backends were waiting on, summed over the samples.
        self.waits: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(1.0):
                rows = conn.execute(
                    "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
                ).fetchall()
                total = sum(n for _, n in rows)
                for kind, event, n in conn.execute(
                    "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), "
                    "count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND pid <> pg_backend_pid() GROUP BY 1, 2"
                ).fetchall():
                    self.waits[f"{kind}:{event}"] += n
                if total >= self.most:
                    self.most, self.states = total, {state: n for state, n in rows}


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (and of its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backend_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``database`` right now (their
    process titles name it), from /proc."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if title.startswith("postgres: ") and f" {database} " in title:
                total += cpu_seconds(int(proc.name))
    return total


def transactions(url: str) -> int:
    """Transactions committed in the database so far (``pg_stat_database``)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return statistics.median(ordered), at(0.95), at(0.99)


def exactly_once(fleet: Fleet, url: str, queued: int) -> None:
    """From the clients' accepted completes and from the database: every accepted
    complete is a done task, no task was completed twice, each done task has one
    finished run."""
    by_task = collections.Counter(task for task, _ in fleet.completed)
    twice = [task for task, n in by_task.items() if n > 1]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY 1").fetchall())
        done = {row[0] for row in conn.execute("SELECT id FROM tasks WHERE status = 'done'")}
        runs = dict(
            conn.execute(
                "SELECT task_id, count(*) FROM runs WHERE status = 'finished' GROUP BY 1"
            ).fetchall()
        )
    lost = sorted(set(by_task) - done)
    unreported = sorted(done - set(by_task))
    multi_runs = sorted(task for task, n in runs.items() if n > 1)
    good = not (twice or lost or unreported or multi_runs)
    print(
        f"exactly-once: {'ok' if good else 'FAILED'}   accepted completes "
        f"{len(fleet.completed)} ({len(by_task)} tasks), done in the database {len(done)}, "
        f"completed twice {len(twice)}, accepted but not done {len(lost)}, done but not "
        f"accepted {len(unreported)}, tasks with >1 finished run {len(multi_runs)}"
    )
    print(f"  tasks by status: {statuses} (queued {queued}); refused (409) {len(fleet.refused)}")


async def simulate(base: str, tokens: list[str], args: argparse.Namespace) -> Fleet:
    fleet = Fleet()
    stop = asyncio.Event()
    stop_at = time.monotonic() + args.seconds
    runners = [SimulatedRunner(n, base, tokens[n], args, fleet) for n in range(args.runners)]
    jobs = [asyncio.create_task(r.run(stop_at, stop)) for r in runners]
    await asyncio.sleep(args.seconds)
    stop.set()  # no new claims; tasks at work finish
    await asyncio.gather(*jobs)
    return fleet


def report(fleet: Fleet, args: argparse.Namespace, cpu: float, wall: float) -> None:
    print(
        f"Fleet simulation: {args.runners} runners, {args.think:g} s of work per task (±50%), "
        f"heartbeat every {args.heartbeat:g} s, a log batch every {args.log_every:g} s, "
        f"PostgreSQL, {wall:.0f} s"
    )
    print(f"  {'route':<10} {'n':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for route in ROUTES:
        values = fleet.latency.get(route, [])
        if values:
            p50, p95, p99 = percentiles(values)
            goal = "   goal p99 < 50 ms" if route in ("claim", "heartbeat", "log") else ""
            print(
                f"  {route:<10} {len(values):>7} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
                f"{max(values):>8.1f}{goal}"
            )
    span = max(fleet.last_complete - (fleet.first_claim or 0.0), 1e-9)
    rate = len(fleet.completed) / span * 60
    print(f"  tasks/min  {rate:8.0f}   ({len(fleet.completed)} in {span:.1f} s)   goal >= 1,000")
    print(f"  server CPU {cpu:8.1f} s   ({cpu / wall:.0%} of one core over {wall:.0f} s)")
    print(f"  long-poll claims answered empty: {fleet.claims_empty}")
    if fleet.errors:
        print(f"  errors: {dict(fleet.errors)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runners", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--think", type=float, default=9.0, help="seconds of work per task")
    parser.add_argument("--tasks", type=int, default=0, help="default: 1.5x what can be done")
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--log-every", type=float, default=2.0)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    tasks = args.tasks or int(args.runners * (args.seconds / max(args.think, 0.05) + 1) * 1.5)
    with (
        tempfile.TemporaryDirectory(prefix="capataz-fleet-") as name,
        postgres_admin_url() as admin,
    ):
        root, _ = _project(Path(name), "fleet")
        url = create_database(admin, "fleet").replace("postgresql://", "postgresql+psycopg://")
        store = Store.open(url)
        store.tasks.add_many([NewTask(f"t{i}", "true", id=f"t{i:06}") for i in range(tasks)])
        tokens = [store.tokens.create("runner", f"sim-{i}") for i in range(args.runners)]
        store.close()
        server, base = _serve(root, url, args.profile)
        try:
            with ConnectionSampler(url) as connections:
                database = url.rpartition("/")[2]
                cpu0, load0 = cpu_seconds(server.pid), os.getloadavg()
                pg0, xact0 = backend_cpu(database), transactions(url)
                own0, started = os.times(), time.monotonic()
                fleet = asyncio.run(simulate(base, tokens, args))
                wall = time.monotonic() - started
                cpu, own1 = cpu_seconds(server.pid) - cpu0, os.times()
                pg_cpu = backend_cpu(database) - pg0
                xacts = transactions(url) - xact0
        finally:
            stop_serve(server)
        report(fleet, args, cpu, wall)
        own = own1.user + own1.system - own0.user - own0.system
        print(f"  bench CPU  {own:8.1f} s   (the simulated fleet, on the same machine)")
        print(
            f"  PostgreSQL connections to the database, most at once: {connections.most} "
            f"{connections.states}"
        )
        print(f"  PostgreSQL backends' CPU {pg_cpu:.1f} s (the connections open at the end)")
        requests = sum(len(v) for v in fleet.latency.values()) + fleet.claims_empty
        print(
            f"  transactions committed {xacts} ({xacts / max(len(fleet.completed), 1):.1f} per "
            f"task, {xacts / max(requests, 1):.2f} per request; stats lag up to 0.5 s)"
        )
        waits = ", ".join(f"{k} {n}" for k, n in connections.waits.most_common(6))
        print(f"  active backends by wait, summed over 1 s samples: {waits or 'none'}")
        print(
            f"  load average 1/5/15 min: before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
            "after {:.2f} {:.2f} {:.2f}; {} cores".format(*os.getloadavg(), os.cpu_count())
        )
        exactly_once(fleet, url, tasks)
        if args.profile is not None:
            stats = pstats.Stats(str(args.profile / "server.prof"))
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
        drop_database(admin, url.replace("postgresql+psycopg://", "postgresql://"))


def _serve(root: Path, url: str, profile: Path | None) -> tuple[subprocess.Popen[str], str]:
    """``capataz serve`` on ``url`` (under the profiler with ``--profile``), healthy."""
    port = free_port()
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    argv = [sys.executable, "-m", "capataz", "serve", "--port", str(port)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        env["CAPATAZ_BENCH_PROFILE"] = str(profile.resolve() / "server.prof")
        argv = [sys.executable, str(Path(__file__).with_name("_profiled_serve.py")), *argv[3:]]
    proc = subprocess.Popen(
        argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc)
    return proc, base


if __name__ == "__main__":
    main()
