"""Live event streams at fleet scale: ``--clients`` SSE clients on ``GET /events`` of
one ``capataz serve`` over SQLite (and PostgreSQL with ``--postgresql``), all fed by
the server's one event reader (``capataz.api.event_hub``).

Tasks are added one at a time by a Store of this process (another writer, as a
database runner would be); each add's return is the commit. Every client (a thread
with its own httpx stream) notes when the ``task.created`` frame of each task
arrives; delivery latency is receive minus commit, over every client and task. The
event-table reads come from the server's ``capataz_event_reads_total`` on /metrics
(``hub``: the shared reader; ``client``: backlogs read by streams at connect).

    python bench/event_streams.py [--clients 50] [--tasks 40] [--postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving, bench

from bench.pg import create_database, drop_database, postgres_admin_url
from bench.remote_runners import _project
from tests.serving import start_serve, stop_serve

from capataz.store import Store


class Client(threading.Thread):
    """One SSE client: the receive time of each task's ``task.created`` frame."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.seen: dict[str, float] = {}
        self.connected = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with (
            httpx.Client(base_url=self.base, headers=headers, timeout=None) as client,
            client.stream("GET", "/events?types=task.created") as response,
        ):
            self.connected.set()
            with contextlib.suppress(httpx.HTTPError):  # the server stopping at the end
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        at = time.monotonic()
                        self.seen[json.loads(line[6:])["task_id"]] = at


def _reads(base: str, token: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    found = re.findall(r'^capataz_event_reads_total\{reader="(\w+)"\} (\S+)$', text, re.M)
    return {reader: float(value) for reader, value in found}


def measure(root: Path, url: str, label: str, args: argparse.Namespace) -> None:
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    store = Store.open(url)
    token = store.tokens.create("viewer", "bench")
    server, base = start_serve(root, env)
    try:
        clients = [Client(base, token) for _ in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.connected.wait(60)
        time.sleep(1.0)  # every stream has joined the hub
        before, started = _reads(base, token), time.monotonic()
        committed: dict[str, float] = {}
        for i in range(args.tasks):
            task_id = f"e{i:04}"
            store.tasks.add(task_id, "true", id=task_id)
            committed[task_id] = time.monotonic()
            deadline = time.monotonic() + 10
            while not all(task_id in c.seen for c in clients) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        after = _reads(base, token)
    finally:
        stop_serve(server)
        store.close()
    latencies = sorted(
        (c.seen[t] - at) * 1000 for c in clients for t, at in committed.items() if t in c.seen
    )
    missing = args.clients * args.tasks - len(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    hub = (after.get("hub", 0) - before.get("hub", 0)) / elapsed
    own = (after.get("client", 0) - before.get("client", 0)) / elapsed
    print(f"{label}, {args.clients} SSE clients, {args.tasks} tasks added one at a time")
    print(
        f"  delivery latency commit -> client: p50 {statistics.median(latencies):5.0f} ms   "
        f"p99 {p99:5.0f} ms   max {latencies[-1]:5.0f} ms   (n={len(latencies)}, missing "
        f"{missing})"
    )
    print(
        f"  event-table reads per second: hub {hub:5.1f}, streams' own {own:5.1f} "
        f"(per-client polling every 0.25 s would be {args.clients * 4})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--postgresql", action="store_true", help="also over PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as name:
        root, url = _project(Path(name), "events")
        measure(root, url, "SQLite", args)
        if args.postgresql:
            with postgres_admin_url() as admin:
                pg_url = create_database(admin, "bench_events")
                try:
                    measure(root, pg_url, "PostgreSQL", args)
                finally:
                    drop_database(admin, pg_url)


if __name__ == "__main__":
    main()
