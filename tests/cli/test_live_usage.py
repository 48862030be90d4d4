"""`capataz exec`'s summary and its --json report tell what the agent used."""

from __future__ import annotations

import json

from capataz.agents.preset import AgentUsage
from capataz.cli.console import out
from capataz.cli.live import render_summary, report_json
from capataz.models import Decision, Outcome
from capataz.pipeline.supervisor import RunReport


def _summary(report: RunReport) -> str:
    """The summary as a wide terminal shows it (a narrow one would fold the line)."""
    width = out.width
    out.width = 200
    try:
        with out.capture() as captured:
            render_summary(report)
    finally:
        out.width = width
    return captured.get()


def _report(usage: AgentUsage | None) -> RunReport:
    return RunReport(
        task_id="t1",
        outcome=Outcome.BLOCKED,
        decision=Decision.BLOCK,
        reason="1 high violation (BUDGET_EXCEEDED): blocked",
        message="rolled back",
        base="0" * 40,
        usage=usage,
    )


def test_the_summary_has_a_usage_line_when_the_agent_reported_one() -> None:
    used = AgentUsage(tokens_in=1200, tokens_out=40, cost_usd=0.0123, model="claude-x", turns=1)
    summary = _summary(_report(used))
    assert "1,200 tokens in, 40 out, $0.0123, model claude-x, 1 turn" in summary
    assert json.loads(report_json(_report(used)))["usage"] == {
        "tokens_in": 1200,
        "tokens_out": 40,
        "cost_usd": 0.0123,
        "model": "claude-x",
        "turns": 1,
    }


def test_no_usage_line_for_an_agent_that_reports_none() -> None:
    assert "tokens in" not in _summary(_report(None))
    assert "usage" not in json.loads(report_json(_report(None)))
