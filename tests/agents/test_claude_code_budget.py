"""A budget stops the real Claude Code while it runs: against a fake Anthropic API
whose second turn never comes, the run can only end by being stopped, so a blocked
BUDGET_EXCEEDED run that says capataz stopped it is the budget at work, not a timeout.
Nothing it wrote lands."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agents.fake_models.anthropic import TOKENS_IN, TOKENS_OUT, FakeAnthropic
from tests.agents.fake_models.server import Edit
from tests.agents.harness import PresetProject, git

pytestmark = pytest.mark.slow
PRESET = "claude-code"
INITIAL = [".gitignore", "README.md", "capataz.toml"]


def test_a_run_past_its_token_budget_is_stopped_and_nothing_lands(tmp_path: Path) -> None:
    fake = FakeAnthropic("edit_then_hang", edits=[Edit("hello.txt", "hello from claude\n")])
    with fake:
        proj = PresetProject(tmp_path / "repo", PRESET, fake.base_url)
        ran = proj.exec("write hello.txt", "tb", "--budget", "1k")
    assert ran.returncode == 1 and ran.report["outcome"] == "blocked", ran.report
    [over] = [v for v in ran.violations if v["type"] == "BUDGET_EXCEEDED"]
    assert over["severity"] == "high"
    assert over["details"].startswith("the agent used ")
    assert over["details"].endswith("; its budget is 1,000 tokens")
    assert "--budget 2k" in over["suggestion"]
    assert f"[agents.{PRESET}] budget" in over["suggestion"]
    assert not [v for v in ran.violations if v["type"] in ("AGENT_FAILED", "AGENT_HUNG")]
    agent = ran.report["agent"]
    assert agent["outcome"] == "failed"
    assert agent["detail"].startswith("stopped by capataz: over budget: the agent used")
    assert ran.report["usage"]["tokens_in"] >= TOKENS_IN
    metrics = proj.progress("tb")["metrics"]
    assert metrics["tokensIn"] + metrics["tokensOut"] > 1000
    assert proj.main_files() == INITIAL  # hello.txt was written, and rolled back


def test_a_tasks_budget_raises_the_agents_default(tmp_path: Path) -> None:
    fake = FakeAnthropic("edit", edits=[Edit("hello.txt", "hello from claude\n")])
    with fake:
        proj = PresetProject(tmp_path / "repo", PRESET, fake.base_url, budget="1k")
        held = proj.exec("write hello.txt", "td")
        before = len(fake.messages())
        ran = proj.exec("write hello.txt", "tr", "--budget", "1M")
    assert held.report["outcome"] == "blocked", held.report
    assert [v["type"] for v in held.violations] == ["BUDGET_EXCEEDED"]
    assert ran.returncode == 0 and ran.report["outcome"] == "landed", ran.report
    assert git(proj.repo, "show", "main:hello.txt") == "hello from claude"
    usage = ran.report["usage"]
    requests = len(fake.messages()) - before
    assert (usage["tokens_in"], usage["tokens_out"]) == (
        TOKENS_IN * requests,
        TOKENS_OUT * requests,
    )
