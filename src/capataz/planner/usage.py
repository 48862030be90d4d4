"""What a planner call used and cost, kept per call (``store.directives.record_call``)
so that ``capataz metrics`` can say what the planner spent, failed calls included.

The cost is computed here from ``[planner] price`` (dollars per million tokens), since
Chat Completions answers report tokens, never dollars; without a price it stays None
rather than a guess."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from capataz.config import PlannerPrice
from capataz.planner.client import Answer
from capataz.store import Store

__all__ = ["ANSWERED", "keep_call", "priced", "tokens"]

ANSWERED = "answered"  # the outcome of a call that got an answer, whatever it said


def tokens(usage: dict[str, Any]) -> tuple[int, int]:
    """Tokens in (the prompt) and out (the completion) of an OpenAI-style usage."""

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    return count("prompt_tokens"), count("completion_tokens")


def priced(answer: Answer, price: PlannerPrice | None) -> Answer:
    """``answer`` with ``cost_usd`` in its usage when the project set a price."""
    if price is None:
        return answer
    tokens_in, tokens_out = tokens(answer.usage)
    cost = (tokens_in * price.input + tokens_out * price.output) / 1_000_000
    return replace(answer, usage={**answer.usage, "cost_usd": round(cost, 8)})


def keep_call(
    store: Store,
    model: str,
    outcome: str,
    *,
    usage: dict[str, Any] | None = None,
    directives: int = 0,
    error: str | None = None,
    actor: str,
) -> None:
    used = usage or {}
    tokens_in, tokens_out = tokens(used)
    cost = used.get("cost_usd")
    store.directives.record_call(
        model,
        outcome,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        directives_stored=directives,
        error=error,
        actor=actor,
    )
