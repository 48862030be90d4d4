"""Claude Code, the real CLI, through `capataz exec` against a fake Anthropic API.

Each test is one run of the real ``claude`` in the real sandbox. "Fails fast" is shown
by what happened, never by the clock: capataz stopped the run because of the agent's
own report (not a timeout, not the idle watchdog), and the fake server saw a request or
two where the CLI, left alone, retries ten times over minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agents.fake_models.anthropic import TOKENS_IN, TOKENS_OUT, FakeAnthropic
from tests.agents.fake_models.server import Edit
from tests.agents.harness import KEY, PresetProject, git

pytestmark = pytest.mark.slow
PRESET = "claude-code"


def project(tmp_path: Path, fake: FakeAnthropic, **keys: object) -> PresetProject:
    return PresetProject(tmp_path / "repo", PRESET, fake.base_url, **keys)


def test_lands_an_edit_with_the_vaults_key_and_records_usage(tmp_path: Path) -> None:
    fake = FakeAnthropic("edit", edits=[Edit("hello.txt", "hello from claude\n")])
    with fake:
        proj = project(tmp_path, fake)
        ran = proj.exec("write hello.txt", "t1")
    assert ran.returncode == 0, (ran.report, ran.stderr)
    assert ran.report["outcome"] == "landed", ran.report
    assert git(proj.repo, "show", "main:hello.txt") == "hello from claude"
    requests = fake.messages()
    assert requests and all(r.headers.get("x-api-key") == KEY for r in requests)
    conversation = [r for r in requests if r.json_body().get("tools")]
    assert any(t["name"] == "Write" for t in conversation[0].json_body()["tools"])
    metrics = proj.progress("t1")["metrics"]
    assert metrics["tokensIn"] == TOKENS_IN * len(requests)
    assert metrics["tokensOut"] == TOKENS_OUT * len(requests)
    assert metrics["turns"] == 2 and metrics["costUsd"] > 0
    assert metrics["model"] == conversation[0].json_body()["model"]


def test_a_401_fails_fast_with_the_auth_reason_and_the_fix(tmp_path: Path) -> None:
    fake = FakeAnthropic("unauthorized")
    with fake:
        proj = project(tmp_path, fake)
        ran = proj.exec("write hello.txt", "t401")
    assert ran.returncode == 1 and ran.report["outcome"] == "blocked", ran.report
    failure = ran.failure()
    assert failure["severity"] == "critical"
    assert failure["details"].startswith("401 from the model: authentication_failed")
    assert failure["suggestion"] == "store a valid key: capataz secret set ANTHROPIC_API_KEY"
    agent = ran.report["agent"]
    assert agent["outcome"] == "failed" and agent["detail"].startswith("stopped by capataz: 401")
    assert 1 <= len(fake.messages()) <= 3  # left alone, the CLI makes 11 attempts
    assert proj.main_files() == [".gitignore", "README.md", "capataz.toml"]


def test_no_network_fails_fast_with_the_network_reason(tmp_path: Path) -> None:
    fake = FakeAnthropic("edit")
    with fake:
        proj = project(tmp_path, fake, network=False)
        ran = proj.exec("write hello.txt", "tnet")
    assert ran.returncode == 1 and ran.report["outcome"] == "blocked", ran.report
    failure = ran.failure()
    port = fake.base_url.rsplit(":", 1)[1]
    assert failure["details"].startswith(
        f"the agent has no network: it cannot connect to its model API at 127.0.0.1:{port}"
    )
    assert f'[agents.{PRESET}] network = ["127.0.0.1:{port}"]' in failure["suggestion"]
    agent = ran.report["agent"]
    assert agent["outcome"] == "failed" and "stopped by capataz" in agent["detail"]
    assert fake.messages() == []  # its connections never left the sandbox


def test_its_state_files_never_land(tmp_path: Path) -> None:
    state = [
        Edit(".claude/settings.local.json", '{"permissions": {}}\n'),
        Edit(".claude/worktrees/w1/notes.md", "scratch\n"),
    ]
    only_state = FakeAnthropic("edit", edits=state)
    with only_state:
        proj = project(tmp_path, only_state)
        ran = proj.exec("configure yourself", "tstate")
    assert ran.returncode == 0 and ran.report["outcome"] == "no-changes", ran.report
    assert proj.main_files() == [".gitignore", "README.md", "capataz.toml"]
    both = FakeAnthropic("edit", edits=[Edit("real.txt", "the change\n"), *state])
    with both:
        ran = PresetProject(tmp_path / "repo2", PRESET, both.base_url).exec("edit", "tboth")
    assert ran.report["outcome"] == "landed", ran.report
    assert [c["path"] for c in ran.report["file_changes"]] == ["real.txt"]


def test_rate_limit_retries_are_chatter_and_the_edit_lands(tmp_path: Path) -> None:
    fake = FakeAnthropic("rate_limited_then_edit")
    with fake:
        proj = project(tmp_path, fake)
        ran = proj.exec("write hello.txt", "t429")
    assert ran.report["outcome"] == "landed", ran.report
    assert len(fake.messages()) >= 3  # the 429, then the two turns of the edit
    log = (proj.repo / ".capataz/progress/t429/artifacts/run.log").read_text()
    assert '"error_status":429' in log


def test_a_hidden_cli_is_named_with_the_expose_that_shows_it(tmp_path: Path) -> None:
    fake = FakeAnthropic("edit")
    with fake:
        proj = project(tmp_path, fake, expose=False)
        ran = proj.exec("write hello.txt", "t127")
    assert ran.returncode == 1, ran.report
    failure = ran.failure()
    assert "cannot be found inside the sandbox" in failure["details"]
    assert "which the sandbox masks" in failure["details"]
    assert failure["suggestion"].startswith("show it read-only to agents: [sandbox] expose = [")
    assert '/npm/node_modules"]' in failure["suggestion"]
    assert fake.messages() == []


def test_a_model_that_never_answers_is_a_hang_not_a_timeout(tmp_path: Path) -> None:
    fake = FakeAnthropic("hang")
    with fake:
        proj = project(tmp_path, fake, idle_timeout="5s")
        ran = proj.exec("write hello.txt", "thang")
    assert ran.returncode == 1 and ran.report["outcome"] == "blocked", ran.report
    assert "AGENT_HUNG" in {v["type"] for v in ran.violations}
    assert ran.report["agent"]["outcome"] == "hung"
    assert len(fake.messages()) >= 1  # it asked, and was never answered
