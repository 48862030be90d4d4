"""Acceptance: the real Codex CLI, run by ``capataz exec`` in the sandbox, against the
fake Responses server on loopback.

The agent is the codex preset's own argv, key from the vault (tests/agents/codex_harness.py).
What capataz does with Codex's failures today, before the preset's reader is wired into
the pipeline, is asserted as it is; the reader is then run on the same lines (from the
run log) to show what it will say. Lines marked ``TIGHTEN at merge`` are the asserts
that change once the reader is wired (AGENT_FAILED with the reader's reason and fix,
usage in the report, the preset's own ``network`` allowlist instead of ``true``).

Needs the real CLI: ``scripts/install-agents`` (a missing CLI fails, never skips).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.agents.codex_harness import (
    KEY,
    MODEL,
    ExecResult,
    commits_on_main,
    landed_files,
    run_scenario,
    sandbox_on,
    show,
)
from tests.agents.fake_models.openai_responses import CACHED_TOKENS, INPUT_TOKENS, OUTPUT_TOKENS

from capataz.agents.presets.codex import (
    AUTH_FIX,
    NETWORK_FIX,
    SANDBOX_FIX,
    CodexPreset,
    CodexReader,
)

pytestmark = pytest.mark.slow


def reader_on(result: ExecResult, exit_code: int | None) -> CodexReader:
    reader = CodexReader()
    for stream, text in result.lines:
        reader.feed(stream, text)
    reader.finish(exit_code)
    return reader


def violation_types(result: ExecResult) -> list[str]:
    return [v["type"] for v in result.report.get("violations", [])]


def only_the_initial_commit(repo: Path) -> bool:
    return commits_on_main(repo) == 1


def test_lands_an_edit_made_with_codex_own_edit_tool(tmp_path: Path) -> None:
    result, fake, repo = run_scenario(tmp_path, "edit")
    assert result.returncode == 0, (result.report.get("violations"), result.lines[-20:])
    assert result.outcome == "landed", result.report
    assert show(repo, "hello.txt") == "hello from codex"
    # Codex's own state (CODEX_HOME under the throwaway HOME) never reaches the tree.
    assert landed_files(repo) == {"hello.txt"}

    calls = fake.model_calls()
    assert len(calls) == 2  # the edit, then the final message after the tool result
    assert all(c.headers["authorization"] == f"Bearer {KEY}" for c in calls)
    first = calls[0].body
    assert first["model"] == MODEL and first["stream"] is True
    tools = {t.get("name"): t.get("type") for t in first["tools"]}
    assert tools["apply_patch"] == "custom"  # Codex 0.169 offers its freeform edit tool
    outputs = [i for i in calls[1].body["input"] if i.get("type") == "custom_tool_call_output"]
    assert outputs and "Success" in outputs[0]["output"]
    # no call but the model's: no /models, no analytics, no plugin sync
    assert {(r.method, r.path) for r in fake.requests} == {("POST", "/v1/responses")}

    reader = reader_on(result, exit_code=result.report["agent"]["exit_code"])
    assert reader.failure is None
    # Codex sums its turn: two calls of the fake's figures (cached tokens are included)
    assert reader.usage.tokens_in == 2 * INPUT_TOKENS > 2 * CACHED_TOKENS
    assert reader.usage.tokens_out == 2 * OUTPUT_TOKENS
    assert reader.usage.turns == 1
    # TIGHTEN at merge: the run's recorded usage (run show / /runs/{id}) equals these.


def test_a_429_is_retried_and_the_edit_lands(tmp_path: Path) -> None:
    result, fake, repo = run_scenario(tmp_path, "rate_limited_then_edit")
    assert result.outcome == "landed", result.report
    assert show(repo, "hello.txt") == "hello from codex"
    assert len(fake.model_calls()) == 3  # 429, then the edit, then the final message
    assert reader_on(result, exit_code=0).failure is None


def test_401_is_not_landed(tmp_path: Path) -> None:
    result, fake, repo = run_scenario(tmp_path, "unauthorized")
    # Codex exits 1 after its stream retries: capataz blocks the run today already.
    assert result.returncode == 1
    assert result.outcome == "blocked" and violation_types(result) == ["AGENT_FAILED"]
    assert only_the_initial_commit(repo)
    assert len(fake.model_calls()) == 3  # 1 + stream_max_retries, a second or so
    assert KEY not in json.dumps(result.report) + "".join(t for _, t in result.lines)

    reader = reader_on(result, exit_code=result.report["agent"]["exit_code"])
    assert reader.failure is not None
    assert reader.failure.reason.startswith("401 from the model: Incorrect API key provided")
    assert reader.failure.fix == AUTH_FIX
    # TIGHTEN at merge: the AGENT_FAILED violation's details/suggestion carry the reader's
    # reason and fix ("capataz secret set OPENAI_API_KEY"), and the run stops at the
    # first 401 (one model call) instead of after Codex's retries.


def test_no_network_fails_fast_and_is_not_landed(tmp_path: Path) -> None:
    result, fake, repo = run_scenario(tmp_path, "edit", network=False)
    # With unbounded retries off Codex gives up after its retries and exits 1 (with its
    # default it printed "Reconnecting... waiting for network" until the wall timeout).
    assert result.returncode == 1
    assert result.report["agent"]["outcome"] == "failed"
    assert result.outcome == "blocked" and violation_types(result) == ["AGENT_FAILED"]
    assert only_the_initial_commit(repo)
    assert fake.model_calls() == []

    reader = reader_on(result, exit_code=result.report["agent"]["exit_code"])
    assert reader.failure is not None
    assert reader.failure.reason.startswith("the agent has no network: Connection failed")
    assert reader.failure.fix == NETWORK_FIX
    # TIGHTEN at merge: with the allowlist, network = ["127.0.0.1:<port>"] from the preset
    # lands the edit and an endpoint left out is this failure plus a denied-host violation.


def test_codex_own_sandbox_turned_on_is_caught_by_the_reader(tmp_path: Path) -> None:
    command = sandbox_on(CodexPreset().settings(model=MODEL, endpoint="{fake}").command)
    result, _, repo = run_scenario(tmp_path, "edit", command=command)
    # Today: Codex's read-only sandbox rejects the patch, Codex exits 0, capataz says
    # "no-changes" (the failure reported as success that the preset exists to prevent).
    assert result.returncode == 0
    assert result.outcome == "no-changes", result.report
    assert only_the_initial_commit(repo)

    reader = reader_on(result, exit_code=0)
    assert reader.failure is not None
    assert "blocked by read-only sandbox" in reader.failure.reason
    assert reader.failure.fix == SANDBOX_FIX
    # TIGHTEN at merge: outcome is AGENT_FAILED with this reason, not "no-changes".


def test_a_hung_endpoint_is_stopped_by_the_idle_watchdog(tmp_path: Path) -> None:
    # Codex waits up to its stream idle timeout (300 s) and prints nothing meanwhile:
    # capataz's idle watchdog ends the run.
    result, fake, repo = run_scenario(tmp_path, "hang", idle_timeout="3s")
    assert result.outcome == "blocked", result.report
    assert result.report["agent"]["outcome"] == "hung", result.report["agent"]
    assert only_the_initial_commit(repo)
    assert len(fake.model_calls()) == 1
    assert reader_on(result, exit_code=None).failure is None  # silence is not a failure


def test_codex_leaves_no_shell_of_its_own_behind(tmp_path: Path) -> None:
    """Codex's shell snapshot (a login shell it starts and does not wait for) is off:
    with a ~/.bashrc that takes 30 s, that shell would outlive Codex every time and the
    run would be blocked for leaving a process (it did so at random under load)."""
    preset = CodexPreset().settings(model=MODEL, endpoint="{fake}").command
    slow_home = 'mkdir -p /tmp/h && echo "sleep 30" > /tmp/h/.bashrc && HOME=/tmp/h exec "$@"'
    result, _, repo = run_scenario(
        tmp_path, "edit", command=["bash", "-c", slow_home, "-", *preset]
    )
    assert result.outcome == "landed", result.report
    assert "AGENT_LEFT_PROCESSES" not in violation_types(result)
    assert show(repo, "hello.txt") == "hello from codex"
