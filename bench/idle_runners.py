"""Idle remote runners, before and after the long-poll claim, measured in one run:

1. requests per idle runner per minute: ``--runners`` remote runners (the real
   :class:`capataz.runner.Runner` over :class:`RemoteQueue`, threads of this process)
   with nothing to do for ``--seconds``; every request they send is counted on the
   client, by route, and the claims also on the server (``/metrics``). "before" is
   the claim answered at once (``claim_wait=0``: the runner's own backoff up to
   ``poll_interval``) and the runner's own sweeps, "after" the long poll
   (``claim_wait=20``), the server sweeping;
2. claim latency after new work arrives (p50/p99): with the same idle runners, tasks
   are added one at a time from another process's point of view (a Store of this
   process, not the server's) and the time until a runner holds each is read from
   the task's ``updated_at`` at claim minus the moment it was added.

Runs over SQLite (the server watches the ready tasks) and prints figures only.

    python bench/idle_runners.py [--runners 8] [--seconds 60] [--tasks 40]
"""

from __future__ import annotations

import argparse
import collections
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

from bench.remote_runners import _project
from tests.serving import start_serve, stop_serve

from capataz.config import parse_config
from capataz.runner import Runner
from capataz.runner.protocol import SWEEPER_HEADER
from capataz.runner.remote import CLAIM_WAIT, RemoteQueue
from capataz.store import Store, TaskState
from capataz.workspace.repo import Repository

CONFIG = """
[project]
target_branch = "main"
[agents.shell]
command = ["bash", "-c", "{instruction}"]
[server]
rate_limit = 100000
rate_burst = 100000
"""


class Counting(httpx.HTTPTransport):
    """Counts every request a runner sends, by the last part of its path. ``old``:
    hides that the server sweeps, so the runner keeps sweeping as before."""

    def __init__(self, counts: collections.Counter[str], *, old: bool) -> None:
        super().__init__()
        self.counts = counts
        self.old = old
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.counts[request.url.path.rsplit("/", 1)[-1]] += 1
        response = super().handle_request(request)
        if self.old and SWEEPER_HEADER in response.headers:
            del response.headers[SWEEPER_HEADER]
        return response


def _server_claims(base: str, token: str) -> dict[str, float]:
    text = httpx.get(
        f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).text
    pattern = r'^capataz_runner_claim_requests_total\{outcome="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def measure(tmp: Path, name: str, label: str, claim_wait: float, args: argparse.Namespace) -> None:
    root, url = _project(tmp, name)
    (root / "capataz.toml").write_text(CONFIG)  # uncommitted: the runners read it here
    store = Store.open(url)
    token = store.tokens.create("runner", "bench")
    viewer = store.tokens.create("viewer", "bench-view")
    server, base = start_serve(root, {**os.environ, "CAPATAZ_DATABASE_URL": url})
    config = parse_config(CONFIG)
    counts: collections.Counter[str] = collections.Counter()
    runners: list[tuple[Runner, RemoteQueue, threading.Thread]] = []
    try:
        for i in range(args.runners):
            transport = Counting(counts, old=claim_wait == 0)
            queue = RemoteQueue(base, token, claim_wait=claim_wait, transport=transport)
            runner = Runner(Repository.discover(root), config, queue, name=f"idle-{i}")
            thread = threading.Thread(target=runner.run, daemon=True)
            thread.start()
            runners.append((runner, queue, thread))
        time.sleep(2.0)  # let them register and settle into idling
        counts.clear()
        before = _server_claims(base, viewer)
        time.sleep(args.seconds)
        idle = dict(counts)
        after = _server_claims(base, viewer)
        per_minute = 60.0 / args.seconds / args.runners
        total = sum(idle.values()) * per_minute
        claims = (sum(after.values()) - sum(before.values())) * per_minute
        shown = ", ".join(f"{k} {v * per_minute:.1f}" for k, v in sorted(idle.items()))
        print(f"{label}: {args.runners} idle remote runners, claim_wait {claim_wait:g} s")
        print(f"  requests per runner per minute: {total:6.1f}   ({shown})")
        print(f"  claims answered by the server per runner per minute: {claims:6.1f}")

        latencies: list[float] = []
        for i in range(args.tasks):
            task_id = f"n{i:04}"
            added = time.monotonic()
            store.tasks.add(task_id, "true", id=task_id)
            while store.tasks.get(task_id).status is TaskState.READY:
                time.sleep(0.002)
            latencies.append((time.monotonic() - added) * 1000)
            time.sleep(0.3)  # the runner finishes it and idles again
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"  claim latency after new work: p50 {statistics.median(ordered):6.0f} ms   "
            f"p99 {p99:6.0f} ms   (n={len(ordered)}, runner poll_interval "
            f"{config.runner.poll_interval:g} s)"
        )
    finally:
        for runner, _, _ in runners:
            runner.shutdown("bench over")
        for _, queue, thread in runners:
            thread.join(timeout=CLAIM_WAIT + 30)
            queue.close()
        stop_serve(server)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runners", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as name:
        tmp = Path(name)
        measure(tmp, "before", "before (claim answered at once)", 0.0, args)
        measure(tmp, "after", "after (long-poll claim)", CLAIM_WAIT, args)


if __name__ == "__main__":
    main()
