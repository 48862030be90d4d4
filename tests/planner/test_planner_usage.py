"""What the planner spent: every call kept with its tokens, its cost at
``[planner] price`` and how it ended, failed calls included, and summed in
``store.metrics()`` (what ``capataz metrics`` and ``/ops/metrics`` show)."""

from __future__ import annotations

import pytest
from tests.agents.fake_models.openai_chat import FakeOpenAIChat

from capataz.errors import ConfigError
from capataz.planner import PlannerAnswerError, PlannerUnauthorized, plan
from capataz.store import Store

from .conftest import GOOD, planner_config

KEY = "sk-test-usage-key-0123456789"
PRICE = "price = { input = 0.15, output = 0.60 }"


def test_calls_tokens_and_cost_are_kept_per_model_failures_included(store: Store) -> None:
    with FakeOpenAIChat(answer=GOOD) as base:
        result = plan(store, planner_config(base, PRICE), api_key=KEY, repo_root=None)
    # The fake reports 1234 prompt and 56 completion tokens.
    expected_cost = (1234 * 0.15 + 56 * 0.60) / 1_000_000
    assert result.usage["cost_usd"] == pytest.approx(expected_cost)
    assert result.directives[0].usage["cost_usd"] == pytest.approx(expected_cost)

    with FakeOpenAIChat("unauthorized") as base, pytest.raises(PlannerUnauthorized):
        plan(store, planner_config(base, PRICE), api_key=KEY, repo_root=None)
    with FakeOpenAIChat(answer="not json") as base, pytest.raises(PlannerAnswerError):
        plan(store, planner_config(base, PRICE), api_key=KEY, repo_root=None)

    used = store.metrics()["planner"]
    assert (used["calls"], used["failed"]) == (3, 2)
    assert (used["tokens_in"], used["tokens_out"]) == (2 * 1234, 2 * 56)
    assert used["cost_usd"] == pytest.approx(2 * expected_cost)
    assert set(used["by_model"]) == {"fake-planner"}
    assert used["by_model"]["fake-planner"]["calls"] == 3


def test_without_a_price_the_cost_is_unknown_not_zero(store: Store) -> None:
    assert store.metrics()["planner"] == {
        "calls": 0,
        "failed": 0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": None,
        "by_model": {},
    }
    with FakeOpenAIChat(answer=GOOD) as base:
        result = plan(store, planner_config(base), api_key=KEY, repo_root=None)
    assert "cost_usd" not in result.usage
    used = store.metrics()["planner"]
    assert (used["calls"], used["tokens_in"], used["cost_usd"]) == (1, 1234, None)


def test_a_bad_price_is_refused_at_load(store: Store) -> None:
    with pytest.raises(ConfigError, match="price"):
        planner_config("http://127.0.0.1:9/v1", "price = { input = -1, output = 0.6 }")
