"""The one spelling of a budget (``--budget``, plan.yaml, the API body, capataz.toml)
and the check that stops a run past it."""

from __future__ import annotations

from typing import Any

import pytest

from capataz.agents.preset import AgentUsage, over_budget
from capataz.units import Budget, parse_budget


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("200k", Budget(tokens=200_000)),
        ("1.5M", Budget(tokens=1_500_000)),
        (200_000, Budget(tokens=200_000)),
        ("2.5usd", Budget(usd=2.5)),
        ("$2.5", Budget(usd=2.5)),
        ("3$", Budget(usd=3.0)),
        ("200k,2.5usd", Budget(tokens=200_000, usd=2.5)),
        ({"tokens": 200_000, "usd": 2.5}, Budget(tokens=200_000, usd=2.5)),
        ({"tokens": "50k"}, Budget(tokens=50_000)),
    ],
)
def test_budgets(text: Any, budget: Budget) -> None:
    assert parse_budget(text) == budget
    assert parse_budget(budget.as_json()) == budget  # what the store keeps reads back


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("lots", "is not a token count"),
        ("2.5", "tokens are whole; for dollars write '2.5usd'"),
        ("0", "must be above 0"),
        ("-1usd", "is not a token count"),
        ("1k,2k", "names two token budgets"),
        ({"dollars": 3}, "keys tokens and usd"),
        ({}, "an empty budget"),
        (True, "is not a token count"),
    ],
)
def test_bad_budgets_say_how_to_write_one(bad: Any, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_budget(bad)
    assert says in str(raised.value)


def test_a_tasks_budget_wins_figure_by_figure_over_the_agents() -> None:
    default = Budget(tokens=100_000, usd=1.0)
    assert Budget(tokens=500_000).over(default) == Budget(tokens=500_000, usd=1.0)
    assert Budget(usd=5.0).over(None) == Budget(usd=5.0)


def test_over_budget_names_the_figure_the_budget_and_how_to_raise_it() -> None:
    within = over_budget(AgentUsage(tokens_in=900, tokens_out=100), Budget(tokens=1000))
    assert within is None  # at the budget is within it
    tokens = over_budget(AgentUsage(tokens_in=900, tokens_out=101), Budget(tokens=1000))
    assert tokens is not None
    assert tokens.details == (
        "the agent used 1,001 tokens (900 in, 101 out); its budget is 1,000 tokens"
    )
    assert "--budget 2k" in tokens.suggestion and "[agents.{agent}] budget" in tokens.suggestion
    dollars = over_budget(AgentUsage(cost_usd=3.0), Budget(usd=2.5))
    assert dollars is not None
    assert dollars.details == "the agent spent $3.0000; its budget is $2.50"
    assert "--budget 5.00usd" in dollars.suggestion
    # an agent that reports no cost is held to its tokens only
    assert over_budget(AgentUsage(tokens_in=10), Budget(usd=0.01)) is None
    assert over_budget(AgentUsage(tokens_in=10**9), None) is None
