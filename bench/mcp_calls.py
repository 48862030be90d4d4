"""MCP tool calls: how long an agent waits on capataz's MCP server, over stdio
(``capataz mcp``, a child process of the agent) and streamable HTTP (``/mcp`` on
``capataz serve``), driven by the official SDK's client, as an agent's would be.

The store holds ``--tasks`` tasks (bulk-added) and one finished run with a log. For each
transport it times the session's start (process start or connection, and the MCP
``initialize``), then ``--calls`` calls each of ``list_tasks`` (a page of 50),
``show_task``, ``run_log`` (the last 100 lines) and ``add_subtask`` (a new name each
time: a real insert through the intake). It prints median and p95 per call, with the
machine's load. Nothing is asserted; docs/performance.md names the goal.

Run: ``python bench/mcp_calls.py [--tasks 2000] [--calls 50]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving

from tests.serving import serving

from capataz.store import NewTask, Store

CAPATAZ = str(Path(sys.executable).with_name("capataz"))
# The per-token rate limit would otherwise be what is measured.
CONFIG = (
    '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n\n'
    "[server]\nrate_limit = 100000\nrate_burst = 100000\n"
)
Session = Callable[[], AbstractAsyncContextManager[ClientSession]]


def make_world(root: Path, tasks: int) -> tuple[Path, dict[str, str], str, str, str]:
    """A repository, its store with ``tasks`` tasks and one finished run, an operator
    token; returns (repo, env, token, a task id, the run id)."""
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "capataz.toml").write_text(CONFIG)
    url = f"sqlite:///{root / 'queue.db'}"
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    store = Store.open(url)
    try:
        store.tasks.add_many([NewTask(f"task {i}", f"echo {i}") for i in range(tasks)])
        ran = store.tasks.add("the run", "echo run")
        runner = store.runners.register("bench", hostname="h", pid=1, concurrency=1)
        claimed = store.leases.claim_task(ran.id, runner)
        assert claimed is not None
        for number in range(500):
            store.runs.append_log(claimed.run_id, f"line {number}\n")
        store.leases.complete(ran.id, claimed.fencing_token, "done", "bench")
        token = store.tokens.create("operator", "bench")
    finally:
        store.close()
    return repo, env, token, ran.id, claimed.run_id


def over_stdio(repo: Path, env: dict[str, str], token: str) -> Session:
    params = StdioServerParameters(
        command=CAPATAZ, args=["mcp"], env={**env, "CAPATAZ_TOKEN": token}, cwd=repo
    )

    @asynccontextmanager
    async def session() -> AsyncIterator[ClientSession]:
        with Path(os.devnull).open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as opened,
            ):
                await opened.initialize()
                yield opened

    return session


def over_http(base: str, token: str) -> Session:
    @asynccontextmanager
    async def session() -> AsyncIterator[ClientSession]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as opened,
        ):
            await opened.initialize()
            yield opened

    return session


async def timed(call: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        result = await call()
        spent.append((time.perf_counter() - started) * 1000)
        assert not getattr(result, "is_error", False), result
    return spent


async def measure(session: Session, task_id: str, run_id: str, calls: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    starts = []
    for _ in range(3):
        started = time.perf_counter()
        async with session():
            starts.append((time.perf_counter() - started) * 1000)
    figures["start"] = starts
    async with session() as s:
        figures["list_tasks"] = await timed(lambda: s.call_tool("list_tasks", {"limit": 50}), calls)
        figures["show_task"] = await timed(
            lambda: s.call_tool("show_task", {"task_id": task_id}), calls
        )
        figures["run_log"] = await timed(
            lambda: s.call_tool("run_log", {"run_id": run_id, "lines": 100}), calls
        )
        names = iter(range(10**6))
        figures["add_subtask"] = await timed(
            lambda: s.call_tool(
                "add_subtask",
                {
                    "parent_task_id": task_id,
                    "name": f"sub-{os.getpid()}-{next(names)}",
                    "instruction": "echo sub",
                },
            ),
            calls,
        )
    return figures


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capataz-bench-mcp-") as scratch:
        repo, env, token, task_id, run_id = make_world(Path(scratch), args.tasks)
        results = {
            "stdio": anyio.run(measure, over_stdio(repo, env, token), task_id, run_id, args.calls)
        }
        with serving(repo, env) as base:
            results["http"] = anyio.run(
                measure, over_http(base, token), task_id, run_id, args.calls
            )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"MCP tool calls, {args.tasks} tasks, {args.calls} calls each; load {load}")
    print(f"{'call':<14}{'stdio p50':>11}{'p95':>9}{'http p50':>11}{'p95':>9}   (ms)")
    for name in ("start", "list_tasks", "show_task", "run_log", "add_subtask"):
        row = f"{name:<14}"
        for transport in ("stdio", "http"):
            values = results[transport][name]
            row += f"{statistics.median(values):>11.1f}{p95(values):>9.1f}"
        print(row)


if __name__ == "__main__":
    main()
