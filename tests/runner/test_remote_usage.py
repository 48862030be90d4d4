"""A remote runner gets a task's budget with its claim and reports its run's usage over
the one runner protocol; the server stores it and answers it in the queue's metrics."""

from __future__ import annotations

from tests.runner.test_remote import Plane, sqlite_plane

from capataz.runner.remote import RemoteQueue
from capataz.store import RunDetails, Store, TaskState
from capataz.units import Budget

__all__ = ["sqlite_plane"]  # the control plane fixture, reused


def test_budget_and_usage_cross_the_runner_protocol(sqlite_plane: Plane) -> None:
    store = Store.open(sqlite_plane.url)
    queue = RemoteQueue(sqlite_plane.base, sqlite_plane.tokens["runner"])
    try:
        store.tasks.add("a", "x", id="a", budget=Budget(tokens=5000, usd=1.5))
        runner_id = queue.runners.register("r1", hostname="h", pid=1, concurrency=1)
        claimed = queue.leases.claim(runner_id)
        assert claimed is not None
        assert claimed.budget == Budget(tokens=5000, usd=1.5)
        details = RunDetails(
            outcome="blocked", tokens_in=6000, tokens_out=50, cost_usd=0.02, model="m", turns=1
        )
        assert queue.leases.complete(
            claimed.id, claimed.fencing_token, TaskState.BLOCKED, "over budget", details=details
        )
        run = store.runs.get(claimed.run_id)
        assert (run.tokens_in, run.tokens_out, run.cost_usd, run.model, run.turns) == (
            6000,
            50,
            0.02,
            "m",
            1,
        )
        assert queue.metrics()["usage"] == {
            "shell": {"tokens_in": 6000, "tokens_out": 50, "cost_usd": 0.02, "runs": 1}
        }
    finally:
        queue.close()
        store.close()
