"""Median cost of each pipeline phase for a trivial task, and sandbox start-up vs bare.

Goals (docs/performance.md): < 25 ms median of capataz overhead per trivial task; < 7 ms sandbox
start-up over a bare process. Prints figures; asserts nothing.

    python bench/pipeline_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from capataz.config import Limits, parse_config
from capataz.pipeline.supervisor import RunSpec, Supervisor
from capataz.sandbox import get_sandbox
from capataz.sandbox.base import SandboxSpec
from capataz.setup.demo import create_demo_repo

CONFIG = """
[project]
target_branch = "main"
[agents.shell]
command = ["bash", "-c", "{instruction}"]
"""


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms"


def bench_pipeline(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as tmp:
        Path(tmp).chmod(0o711)  # the sandbox's uid must reach the workspace
        repo = create_demo_repo(Path(tmp) / "repo")
        config = parse_config(CONFIG)
        phases: dict[str, list[float]] = defaultdict(list)
        totals: list[float] = []
        overheads: list[float] = []
        agent_walls: list[float] = []
        cpus: list[float] = []
        for i in range(runs):
            supervisor = Supervisor(repo, config)
            cpu_before = _cpu()
            started = time.perf_counter()
            report = supervisor.execute(
                RunSpec(f"bench-{i}", f"echo {i} > f{i}.txt", agent="shell")
            )
            total = time.perf_counter() - started
            cpus.append(_cpu() - cpu_before)
            assert report.outcome.value == "landed", report.reason
            assert report.agent is not None
            totals.append(total)
            agent_walls.append(report.agent.wall_seconds)
            overheads.append(total - report.agent.wall_seconds)
            for step in report.steps:
                phases[step.phase].append(step.seconds)
        print(f"trivial task through the whole pipeline, {runs} runs (median):")
        for name, values in phases.items():
            print(f"  {name:<12} {median_ms(values)}")
        print(f"  {'total':<12} {median_ms(totals)}")
        print(f"  agent in sandbox {median_ms(agent_walls)}")
        print(f"  capataz overhead (total - agent) {median_ms(overheads)}   goal < 25 ms")
        print(f"  CPU per task (capataz, git, sandbox, agent) {median_ms(cpus)}")
        print(f"  load average (1, 5, 15 min) {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_sandbox(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as tmp:
        sandbox = get_sandbox("bwrap")
        spec = SandboxSpec(argv=["true"], workspace=Path(tmp), limits=Limits(idle_timeout=None))
        bare: list[float] = []
        boxed: list[float] = []
        supervised_bare: list[float] = []
        unsandboxed = get_sandbox("none")
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(["true"], check=True)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            unsandboxed.run(spec, lambda _: None)
            supervised_bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = sandbox.run(spec, lambda _: None)
            boxed.append(time.perf_counter() - t)
            assert result.ok
        print(f"sandbox start-up, {runs} runs of `true` (median):")
        print(f"  bare subprocess.run    {median_ms(bare)}")
        print(f"  capataz, sandbox=none  {median_ms(supervised_bare)}")
        print(f"  capataz, bubblewrap    {median_ms(boxed)}")
        extra = (statistics.median(boxed) - statistics.median(bare)) * 1000
        print(f"  bubblewrap over bare   {extra:8.1f} ms   goal < 7 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bench_sandbox(args.runs * 2)
    bench_pipeline(args.runs)


if __name__ == "__main__":
    main()
