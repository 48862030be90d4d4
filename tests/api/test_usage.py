"""Usage and budgets over the API: a task queued with a budget keeps it, a run's
usage is in ``/runs`` and ``/runs/{id}``, and ``/ops/metrics``, ``/runner/metrics``
and the Prometheus ``/metrics`` sum it by agent."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from capataz.runner.protocol import QueueMetrics
from capataz.store import RunDetails

from .conftest import Server


def test_a_runs_usage_is_answered_and_summed_by_agent(server: Server) -> None:
    with server.client("operator") as client:
        added = client.post("/ops/tasks", json={"instruction": "true", "budget": "200k,2.5usd"})
        plain = client.post("/ops/tasks", json={"instruction": "true"})
    assert added.status_code == 201, added.text
    assert added.json()["data"]["budget"] == {"tokens": 200_000, "usd": 2.5}
    assert plain.json()["data"]["budget"] is None
    store = server.store()
    try:
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=1)
        run_ids = []
        for used in ((1000, 200, 0.05), (500, 100, 0.25)):
            claimed = store.leases.claim(runner)
            assert claimed is not None
            details = RunDetails(
                outcome="landed",
                tokens_in=used[0],
                tokens_out=used[1],
                cost_usd=used[2],
                model="claude-sonnet-4-5",
                turns=2,
            )
            assert store.leases.complete(claimed.id, claimed.fencing_token, "done", details=details)
            run_ids.append(claimed.run_id)
    finally:
        store.close()
    with server.client("viewer") as client:
        task = client.get(f"/ops/tasks/{added.json()['data']['id']}").json()["data"]
        run = client.get(f"/runs/{run_ids[0]}").json()["data"]
        runs = client.get("/runs").json()["data"]
        metrics = client.get("/ops/metrics").json()["data"]
        prometheus = client.get("/metrics")
    with server.client("runner") as client:
        queue = client.get("/runner/metrics").json()["data"]
    assert task["budget"] == {"tokens": 200_000, "usd": 2.5}
    assert {k: run[k] for k in ("agent", "tokens_in", "tokens_out", "cost_usd", "model")} == {
        "agent": "shell",
        "tokens_in": 1000,
        "tokens_out": 200,
        "cost_usd": 0.05,
        "model": "claude-sonnet-4-5",
    }
    assert run["turns"] == 2
    assert sorted(r["tokens_in"] for r in runs) == [500, 1000]
    expected = {"tokens_in": 1500, "tokens_out": 300, "cost_usd": 0.3, "runs": 2}
    assert metrics["usage"]["shell"] == expected
    assert QueueMetrics.model_validate(queue).usage["shell"].tokens_in == 1500  # RemoteQueue's

    families = {f.name: f for f in text_string_to_metric_families(prometheus.text)}
    tokens = {
        (s.labels["agent"], s.labels["direction"]): s.value
        for s in families["capataz_agent_tokens"].samples
        if s.name == "capataz_agent_tokens_total"
    }
    assert tokens == {("shell", "in"): 1500.0, ("shell", "out"): 300.0}
    [cost] = [s for s in families["capataz_agent_cost_usd"].samples if s.name.endswith("_total")]
    assert cost.labels == {"agent": "shell"}
    assert abs(cost.value - 0.3) < 1e-9


def test_a_bad_budget_in_the_body_is_refused_naming_it(server: Server) -> None:
    with server.client("operator") as client:
        refused = client.post("/ops/tasks", json={"instruction": "true", "budget": "lots"})
        listed = client.get("/ops/tasks").json()["data"]
    assert refused.status_code == 422
    assert "body.budget" in refused.text and "'lots' is not a token count" in refused.text
    assert listed == []
