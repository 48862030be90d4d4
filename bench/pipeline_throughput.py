"""Trivial tasks per minute through the whole pipeline (claim → workspace → sandbox →
gates → land → record) with runner processes sharing one queue.

Goal (docs/performance.md): >= 2,400 trivial tasks/min with 2 runners on 2 cores. Prints
figures only, with the CPU each task cost (steadier than the rate on a shared machine)
and the load average.

    python bench/pipeline_throughput.py [--tasks 200] [--runners 2] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from capataz.setup.demo import create_demo_repo
from capataz.store import NewTask, Store, TaskState

CONFIG = """
[project]
target_branch = "main"
[agents.shell]
command = ["bash", "-c", "{instruction}"]
[runner]
poll_interval = "0.2s"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as tmp:
        Path(tmp).chmod(0o711)  # the sandbox's uid must reach the workspace
        repo = create_demo_repo(Path(tmp) / "repo")
        (repo.root / "capataz.toml").write_text(CONFIG)
        subprocess.run(
            ["git", "-C", str(repo.root), "commit", "-qam", "bench config"],
            check=True,
            env={
                **os.environ,
                "GIT_AUTHOR_NAME": "b",
                "GIT_AUTHOR_EMAIL": "b@b",
                "GIT_COMMITTER_NAME": "b",
                "GIT_COMMITTER_EMAIL": "b@b",
            },
        )
        url = f"sqlite:///{repo.root / '.capataz' / 'capataz.db'}"
        (repo.root / ".capataz").mkdir(exist_ok=True)
        store = Store.open(url)
        store.tasks.add_many(
            [NewTask(f"t{i}", f"echo {i} > f{i}.txt", id=f"t{i:05}") for i in range(args.tasks)]
        )
        env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
        started = time.perf_counter()
        cpu_before = _children_cpu()
        runners = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "capataz",
                    "runner",
                    "run",
                    "--exit-when-idle",
                    "--concurrency",
                    str(args.concurrency),
                ],
                cwd=repo.root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(args.runners)
        ]
        for runner in runners:
            runner.wait()
        elapsed = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        states = Counter(t.status for t in store.tasks.list())
        landed = (
            int(
                subprocess.run(
                    ["git", "-C", str(repo.root), "rev-list", "--count", "main"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            - 2
        )
        store.close()
    per_minute = args.tasks / elapsed * 60
    print(
        f"{args.tasks} trivial tasks, {args.runners} runner processes x concurrency "
        f"{args.concurrency}, SQLite queue, bubblewrap sandbox"
    )
    print(f"  wall (incl. runner start-up)  {elapsed:8.1f} s")
    print(f"  throughput                    {per_minute:8.0f} tasks/min   goal >= 2,400")
    print(
        f"  CPU per task                  {cpu / args.tasks * 1000:8.1f} ms   "
        "(runners and every process they started; what 2 cores must fit 2,400 of a minute in)"
    )
    print(f"  done {states.get(TaskState.DONE, 0)} / {args.tasks}, commits landed {landed}")
    print(f"  load average (1, 5, 15 min)   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _children_cpu() -> float:
    """CPU seconds of the waited-for children (the runners, and what they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
