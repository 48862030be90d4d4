"""Remote runners through the control plane, measured in one run:

1. claim + heartbeat latency (p50/p99) seen by 8 concurrent remote runners: each is a
   process with its own runner token that claims, heartbeats, works ``--think``
   seconds and completes trivial tasks through ``capataz serve`` (no pipeline: the
   API alone). With 100 ms of work the runners keep the API busy as a fleet of short
   tasks would; with 0 they saturate it (all on the same 2 cores as the server), which
   measures queueing more than the API;
2. trivial tasks per minute through the whole pipeline with runner processes working
   through the API (``runner run --server``) versus the same runners on the database.

Goals (docs/performance.md): p99 claim latency < 50 ms; remote throughput >= 80 % of the database
runners'. Prints figures only.

    python bench/remote_runners.py [--runners 8] [--claims 150] [--tasks 120]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving

from tests.serving import start_serve, stop_serve

from capataz.runner.remote import RemoteQueue
from capataz.setup.demo import create_demo_repo
from capataz.store import NewTask, Store, TaskState

CONFIG = """
[project]
target_branch = "main"
[agents.shell]
command = ["bash", "-c", "{instruction}"]
[runner]
poll_interval = "0.2s"
[server]
rate_limit = 100000
rate_burst = 100000
"""
GIT_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def _project(tmp: Path, name: str) -> tuple[Path, str]:
    repo = create_demo_repo(tmp / name)
    (repo.root / "capataz.toml").write_text(CONFIG)
    subprocess.run(
        ["git", "-C", str(repo.root), "commit", "-qam", "bench config"],
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    (repo.root / ".capataz").mkdir(exist_ok=True)
    return repo.root, f"sqlite:///{repo.root / '.capataz' / 'capataz.db'}"


def _api_worker(
    base: str,
    token: str,
    claims: int,
    think: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    queue = RemoteQueue(base, token)
    runner = queue.runners.register("bench", hostname="bench", pid=os.getpid(), concurrency=1)
    claim_ms: list[float] = []
    beat_ms: list[float] = []
    for _ in range(claims):
        started = time.perf_counter()
        claimed = queue.leases.claim(runner, 30.0)
        claim_ms.append((time.perf_counter() - started) * 1000)
        if claimed is None:
            break
        started = time.perf_counter()
        queue.leases.heartbeat(claimed.id, claimed.fencing_token, 30.0)
        beat_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(think)  # the task's own work
        queue.leases.complete(claimed.id, claimed.fencing_token, TaskState.DONE, "bench")
    queue.close()
    out.put((claim_ms, beat_ms))


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):6.1f} ms   p99 {p99:6.1f} ms   (n={len(ordered)})"


def api_latency(tmp: Path, runners: int, claims: int, think: float) -> None:
    root, url = _project(tmp, f"latency-{think}")
    store = Store.open(url)
    store.tasks.add_many(
        [NewTask(f"t{i}", "true", id=f"t{i:06}") for i in range(runners * claims + runners)]
    )
    tokens = [store.tokens.create("runner", f"bench-{i}") for i in range(runners)]
    store.close()
    server, base = start_serve(root, {**os.environ, "CAPATAZ_DATABASE_URL": url})
    try:
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        procs = [
            multiprocessing.Process(target=_api_worker, args=(base, token, claims, think, out))
            for token in tokens
        ]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        results = [out.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
    finally:
        stop_serve(server)
    claim_ms = [v for c, _ in results for v in c]
    beat_ms = [v for _, b in results for v in b]
    print(
        f"API latency, {runners} concurrent remote runners: claim, heartbeat, "
        f"{think * 1000:.0f} ms of work, complete"
    )
    print(f"  claim      {_percentiles(claim_ms)}   goal p99 < 50 ms")
    print(f"  heartbeat  {_percentiles(beat_ms)}")
    print(f"  cycles/s   {len(beat_ms) / elapsed:8.0f}")


def _throughput(tmp: Path, name: str, tasks: int, runners: int, remote: bool) -> float:
    root, url = _project(tmp, name)
    store = Store.open(url)
    store.tasks.add_many(
        [NewTask(f"t{i}", f"echo {i} > f{i}.txt", id=f"t{i:05}") for i in range(tasks)]
    )
    token = store.tokens.create("runner", "bench") if remote else ""
    server = None
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    argv = [sys.executable, "-m", "capataz", "runner", "run", "--exit-when-idle"]
    if remote:
        server, base = start_serve(root, {**os.environ, "CAPATAZ_DATABASE_URL": url})
        env = {**os.environ, "CAPATAZ_TOKEN": token}
        env.pop("CAPATAZ_DATABASE_URL", None)
        argv += ["--server", base]
    try:
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [*argv, "--concurrency", "2"],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(runners)
        ]
        for proc in procs:
            proc.wait()
        elapsed = time.perf_counter() - started
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    done = sum(t.status is TaskState.DONE for t in store.tasks.list())
    store.close()
    rate = tasks / elapsed * 60
    kind = "remote (HTTP API)" if remote else "database (SQLite)"
    print(f"  {kind:20} {rate:7.0f} tasks/min   done {done}/{tasks}   wall {elapsed:5.1f} s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runners", type=int, default=8)
    parser.add_argument("--claims", type=int, default=150)
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--pipeline-runners", type=int, default=2)
    parser.add_argument(
        "--think",
        type=float,
        nargs="+",
        default=[0.1, 0.0],
        help="seconds of work per task between heartbeat and complete (0: saturate the API)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as name:
        tmp = Path(name)
        for think in args.think:
            api_latency(tmp, args.runners, args.claims, think)
        print(
            f"Trivial tasks through the pipeline, {args.pipeline_runners} runner processes "
            "x concurrency 2, bubblewrap sandbox"
        )
        database = _throughput(tmp, "db", args.tasks, args.pipeline_runners, remote=False)
        remote = _throughput(tmp, "remote", args.tasks, args.pipeline_runners, remote=True)
        print(f"  remote / database    {remote / database:7.0%}   goal >= 80%")


if __name__ == "__main__":
    main()
