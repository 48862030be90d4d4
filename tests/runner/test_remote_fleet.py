"""A fleet of remote runners as ``capataz serve`` keeps it: an idle runner waits in a
long-poll claim instead of asking again and again, and the server's own sweeper
rescues the task of a runner killed with SIGKILL, with no runner left to sweep. What
the server did is read from its claim counters (``/metrics``) and the audit log."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.api.test_long_poll import parse_claims
from tests.helpers import Output, host_pids, wait_for
from tests.runner.test_remote import Plane, serve_plane
from tests.runner.test_runner import CONFIG

from capataz.store import Store, TaskState

# A short lease (3 s) and sweep interval, so a dead runner's task is rescued quickly.
FLEET_CONFIG = CONFIG + "\n[server]\nrate_limit = 10000\nrate_burst = 10000\n"


@pytest.fixture
def fleet(make_repo: Callable[..., Path], queue_url: str) -> Iterator[Plane]:
    """A control plane with short leases over SQLite and, in a second run, PostgreSQL."""
    yield from serve_plane(make_repo, queue_url, FLEET_CONFIG)


def claim_counts(plane: Plane) -> dict[str, float]:
    text = httpx.get(
        f"{plane.base}/metrics",
        headers={"Authorization": f"Bearer {plane.tokens['viewer']}"},
        timeout=10,
    ).text
    return parse_claims(text)


def test_an_idle_remote_runner_waits_in_one_claim_and_gets_new_work_through_it(
    fleet: Plane,
) -> None:
    store = Store.open(fleet.url)
    runner = fleet.runner("--concurrency", "1")
    output = Output(runner)
    try:
        wait_for(lambda: claim_counts(fleet)["waiting"] == 1, "the idle runner's claim is held")
        store.tasks.add("work", "echo w > w.txt", id="work")
        wait_for(lambda: store.tasks.get("work").status is TaskState.DONE, "work is done")
        wait_for(lambda: claim_counts(fleet)["waiting"] == 1, "idle again, waiting")
        counts = claim_counts(fleet)
        # The task came through the claim that was waiting; no claim was answered
        # "nothing" at once (the old poll loop asked several times a second).
        assert counts.get("claimed_after_wait") == 1, (counts, output.text[-3000:])
        assert counts.get("empty", 0) == 0, counts
        assert counts.get("claimed", 0) == 0, counts
    finally:
        runner.send_signal(signal.SIGTERM)
        output.finish(timeout=120)
        store.close()


def test_an_idle_remote_runner_sent_sigterm_stops_without_waiting_for_its_claim(
    fleet: Plane,
) -> None:
    """The long poll waits 20 s on the server; a stopping runner gives it up at once
    (before, it exited only when the claim answered: after up to 20 s)."""
    runner = fleet.runner("--concurrency", "1")
    output = Output(runner)
    try:
        wait_for(lambda: claim_counts(fleet)["waiting"] == 1, "the idle runner's claim is held")
        runner.send_signal(signal.SIGTERM)
        # Well under the claim's 20 s wait, generous for a loaded machine.
        wait_for(lambda: runner.poll() is not None, "the runner exits", ceiling=10)
        text = output.finish(timeout=10)
        assert runner.returncode == 0, text[-3000:]
        assert "stopped after 0 task(s)" in text, text[-3000:]
    finally:
        if runner.poll() is None:
            runner.kill()
            output.finish(timeout=30)


def test_the_server_rescues_the_task_of_a_killed_remote_runner(fleet: Plane) -> None:
    store = Store.open(fleet.url)
    marker = f"fleet-kill-{os.getpid()}-{id(store)}"
    store.tasks.add("held", f"sleep 120 # {marker}", id="held", agent="endless")
    runner = fleet.runner("--concurrency", "1")
    output = Output(runner)
    try:
        wait_for(lambda: bool(host_pids(marker)), "the agent runs")
        assert store.tasks.get("held").status is TaskState.RUNNING
        runner.send_signal(signal.SIGKILL)
        output.finish(timeout=30)
        for pid in host_pids(marker):  # the killed runner's agent, ours to end
            os.kill(pid, signal.SIGKILL)
        # No runner is alive to call /runner/sweep: only the server can rescue it.
        wait_for(
            lambda: store.tasks.get("held").status is TaskState.READY,
            "the server's sweeper rescued the task",
            ceiling=60,
        )
        task = store.tasks.get("held")
        assert task.attempts == 1 and "expired" in (task.reason or ""), task.reason

        def audited() -> bool:
            audit = io.StringIO()
            store.audit.export(audit)
            return '"sweeper:server"' in audit.getvalue()

        # The sweep seals its audit entries in a transaction after the rescue's commit.
        wait_for(audited, "the rescue is in the audit chain, by the server's sweeper")
    finally:
        if runner.poll() is None:
            runner.kill()
        store.close()
