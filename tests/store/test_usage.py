"""What the agents used, per run and summed by agent, and the budget a task carries
from the queue to the runner that claims it, on both databases."""

from __future__ import annotations

from capataz.store import RunDetails, Store, TaskState
from capataz.units import Budget


def _run(store: Store, task_id: str, agent: str, details: RunDetails) -> str:
    store.tasks.add(task_id, "x", agent, id=task_id)
    claimed = store.leases.claim("runner-1")
    assert claimed is not None and claimed.id == task_id
    assert store.leases.complete(claimed.id, claimed.fencing_token, TaskState.DONE, details=details)
    return claimed.run_id


def test_a_runs_usage_is_read_back_with_the_run(store: Store) -> None:
    details = RunDetails(
        outcome="landed",
        tokens_in=12_345,
        tokens_out=678,
        cost_usd=0.0421,
        model="claude-sonnet-4-5",
        turns=3,
    )
    run_id = _run(store, "a", "claude", details)
    run = store.runs.get(run_id)
    assert (run.agent, run.tokens_in, run.tokens_out, run.cost_usd, run.model, run.turns) == (
        "claude",
        12_345,
        678,
        0.0421,
        "claude-sonnet-4-5",
        3,
    )
    [listed] = store.runs.list()
    assert (listed.agent, listed.tokens_in, listed.tokens_out, listed.cost_usd) == (
        "claude",
        12_345,
        678,
        0.0421,
    )


def test_a_run_that_reported_no_usage_has_none(store: Store) -> None:
    run = store.runs.get(_run(store, "a", "shell", RunDetails(outcome="landed", exit_code=0)))
    assert (run.tokens_in, run.tokens_out, run.cost_usd, run.model, run.turns) == (None,) * 5
    assert store.runs.usage_by_agent() == {}
    assert store.metrics()["usage"] == {}


def test_usage_is_summed_by_agent(store: Store) -> None:
    _run(store, "a", "claude", RunDetails("landed", tokens_in=100, tokens_out=10, cost_usd=0.5))
    _run(store, "b", "claude", RunDetails("blocked", tokens_in=200, tokens_out=20, cost_usd=0.25))
    _run(store, "c", "codex", RunDetails("landed", tokens_in=7, tokens_out=3))  # no cost
    _run(store, "d", "shell", RunDetails("landed", exit_code=0))  # no usage: not counted
    expected = {
        "claude": {"tokens_in": 300, "tokens_out": 30, "cost_usd": 0.75, "runs": 2},
        "codex": {"tokens_in": 7, "tokens_out": 3, "cost_usd": None, "runs": 1},
    }
    assert store.runs.usage_by_agent() == expected
    assert store.metrics()["usage"] == expected


def test_a_tasks_budget_reaches_the_runner_that_claims_it(store: Store) -> None:
    store.tasks.add("a", "x", "claude", id="a", budget=Budget(tokens=200_000, usd=2.5))
    store.tasks.add("b", "x", "claude", id="b")
    assert store.tasks.get("a").budget == Budget(tokens=200_000, usd=2.5)
    assert store.tasks.get("b").budget is None
    first = store.leases.claim("runner-1", claim_key="k1")
    assert first is not None and first.id == "a"
    assert first.budget == Budget(tokens=200_000, usd=2.5)
    again = store.leases.claim("runner-1", claim_key="k1")  # the answer was lost: replayed
    assert again is not None and again.id == "a" and again.budget == first.budget
    second = store.leases.claim("runner-1")
    assert second is not None and second.id == "b" and second.budget is None
