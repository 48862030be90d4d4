"""The codex preset's settings and its output reader, on lines the real CLI printed.

The transcripts under tests/agents/recorded/codex/ were recorded from Codex CLI 0.169
run by ``capataz exec`` in the sandbox against the fake Responses server (re-record
with ``python tests/agents/codex_harness.py record``); the reader is tested on them
line by line, so a change in Codex's format shows up as a failing test here."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from capataz.agents.preset import endpoint_address
from capataz.agents.presets import PRESETS, apply_preset, preset_named
from capataz.agents.presets.codex import (
    AUTH_FIX,
    NETWORK_FIX,
    SANDBOX_FIX,
    CodexPreset,
    CodexReader,
    classify,
)
from capataz.config import AgentConfig

RECORDED = Path(__file__).parent / "recorded" / "codex"


def transcript(name: str) -> list[tuple[str, str]]:
    lines = []
    for line in (RECORDED / f"{name}.log").read_text().splitlines():
        stream, text = line.split("\t", 1)
        lines.append((stream, text))
    return lines


def read(lines: list[tuple[str, str]], exit_code: int | None) -> tuple[CodexReader, list[bool]]:
    reader = CodexReader()
    progress = [reader.feed(stream, text) for stream, text in lines]
    reader.finish(exit_code)
    return reader, progress


def first_failing_line(lines: list[tuple[str, str]]) -> int | None:
    reader = CodexReader()
    for number, (stream, text) in enumerate(lines):
        reader.feed(stream, text)
        if reader.failure is not None:
            return number
    return None


# -- settings ---------------------------------------------------------------------------


def test_registered_as_codex() -> None:
    assert PRESETS["codex"] is CodexPreset
    assert isinstance(preset_named("codex"), CodexPreset)


def test_command_runs_codex_unattended_with_its_sandbox_off() -> None:
    settings = CodexPreset().settings(model="gpt-5.5", endpoint="http://127.0.0.1:8787/v1")
    command = settings.command
    assert command[:3] == ["codex", "exec", "--json"]
    assert "--dangerously-bypass-approvals-and-sandbox" in command
    assert "--skip-git-repo-check" in command
    assert command[-2:] == ["--", "{instruction}"]  # a prompt starting with "-" stays one
    assert command[command.index("-m") + 1] == "gpt-5.5"
    overrides = [command[i + 1] for i, part in enumerate(command) if part == "-c"]
    assert "features.unbounded_connection_retries=false" in overrides
    assert "analytics.enabled=false" in overrides and "features.plugins=false" in overrides
    assert "model_provider=capataz" in overrides
    (provider,) = [o for o in overrides if o.startswith("model_providers.")]
    table = tomllib.loads(provider)["model_providers"]["capataz"]
    assert table["base_url"] == "http://127.0.0.1:8787/v1"
    assert table["env_key"] == "OPENAI_API_KEY" and table["wire_api"] == "responses"
    assert table["request_max_retries"] <= 2 and table["stream_max_retries"] <= 2
    assert settings.secrets == ["OPENAI_API_KEY"]
    assert settings.network == ["127.0.0.1:8787"]
    assert settings.memory is not None and settings.memory >= 1024**3  # Node needs ~700 MiB
    assert settings.env == {}  # CODEX_HOME stays $HOME/.codex, outside the tree


def test_no_model_leaves_codex_default_and_endpoint_is_toml_escaped() -> None:
    endpoint = 'https://example.com/v1/"quoted"\\'
    command = CodexPreset().settings(model=None, endpoint=endpoint).command
    assert "-m" not in command
    (provider,) = [part for part in command if part.startswith("model_providers.")]
    assert tomllib.loads(provider)["model_providers"]["capataz"]["base_url"] == endpoint


def test_default_endpoint_is_openai() -> None:
    preset = CodexPreset()
    settings = preset.settings(model=None, endpoint=preset.default_endpoint)
    assert settings.network == [endpoint_address("https://api.openai.com/v1")]
    assert settings.network == ["api.openai.com:443"]


def test_apply_preset_fills_what_the_user_left_unset() -> None:
    agent = apply_preset(AgentConfig(preset="codex", model="gpt-5.5"))
    assert agent.command is not None and agent.command[:2] == ["codex", "exec"]
    assert agent.secrets == ["OPENAI_API_KEY"]
    assert agent.endpoint == "https://api.openai.com/v1"
    mine = apply_preset(AgentConfig(preset="codex", command=["my-codex", "{instruction}"]))
    assert mine.command == ["my-codex", "{instruction}"]


# -- the reader on recorded runs ------------------------------------------------------------


@pytest.mark.parametrize("name", ["edit", "edit_shell", "rate_limited_then_edit"])
def test_a_landed_edit_is_no_failure_and_its_usage_is_counted(name: str) -> None:
    reader, _ = read(transcript(name), exit_code=0)
    assert reader.failure is None
    # two model calls of 1200 in / 34 out (the fake's figures), summed by Codex per turn
    assert (reader.usage.tokens_in, reader.usage.tokens_out) == (2400, 68)
    assert reader.usage.turns == 1
    assert reader.usage.cost_usd is None  # Codex reports no cost


def test_model_is_taken_from_codex_when_it_names_it() -> None:
    reader, _ = read(transcript("edit_shell"), exit_code=0)
    assert reader.usage.model == "gpt-unknown"
    assert CodexReader(model="gpt-5.5").usage.model == "gpt-5.5"


def test_rate_limit_retry_notice_is_chatter() -> None:
    lines = transcript("rate_limited_then_edit")
    _, progress = read(lines, exit_code=0)
    notices = [i for i, (_, text) in enumerate(lines) if "Reconnecting..." in text]
    assert notices and not any(progress[i] for i in notices)
    assert all(progress[i] for i, (_, text) in enumerate(lines) if '"item.' in text)


def test_401_fails_at_the_first_notice_with_the_secret_fix() -> None:
    lines = transcript("unauthorized")
    reader, progress = read(lines, exit_code=1)
    assert reader.failure is not None
    assert reader.failure.reason.startswith("401 from the model: Incorrect API key provided")
    assert "url:" not in reader.failure.reason
    assert reader.failure.fix == AUTH_FIX == "store the key: capataz secret set OPENAI_API_KEY"
    first = first_failing_line(lines)
    assert first is not None and "Reconnecting... 1/" in lines[first][1]  # no waiting
    assert progress[first] is False


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("no_network", "Connection failed: error sending request"),
        ("disconnect", "stream disconnected before completion"),
    ],
)
def test_no_network_fails_after_the_retries_which_are_chatter(name: str, needle: str) -> None:
    lines = transcript(name)
    reader, progress = read(lines, exit_code=1)
    assert reader.failure is not None
    final = json.loads(lines[-2][1])["message"]  # the error event that ends the retries
    assert reader.failure.reason == f"the agent has no network: {final}"
    assert needle in reader.failure.reason
    assert reader.failure.fix == NETWORK_FIX
    notices = [i for i, (_, text) in enumerate(lines) if "Reconnecting..." in text]
    assert len(notices) == 2 and not any(progress[i] for i in notices)
    first = first_failing_line(lines)
    assert first is not None and first > notices[-1]  # after the retries, not before


def test_waiting_for_network_forever_fails_after_a_few_notices() -> None:
    lines = transcript("waiting_for_network")
    reader, progress = read(lines, exit_code=None)  # killed by capataz
    assert reader.failure is not None
    assert reader.failure.reason.startswith("the agent has no network: Reconnecting...")
    notices = [i for i, (_, text) in enumerate(lines) if "waiting for network" in text]
    assert first_failing_line(lines) == notices[2]
    assert not any(progress[i] for i in notices)


def test_inner_sandbox_rejection_is_a_failure_naming_the_fix() -> None:
    # Codex exits 0 here and capataz says "no-changes": only stderr tells why.
    lines = transcript("inner_sandbox")
    reader, _ = read(lines, exit_code=0)
    assert reader.failure is not None
    assert "blocked by read-only sandbox" in reader.failure.reason
    assert reader.failure.reason.startswith("Codex's own sandbox cannot run inside capataz's")
    assert reader.failure.fix == SANDBOX_FIX
    assert "--dangerously-bypass-approvals-and-sandbox" in SANDBOX_FIX


def test_start_up_notices_are_chatter() -> None:
    lines = transcript("edit")
    _, progress = read(lines, exit_code=0)
    assert [progress[i] for i, (stream, _) in enumerate(lines) if stream == "err"] == [
        False,
        False,
    ]


# -- lines observed outside the recorded runs ---------------------------------------------


def test_missing_key_event() -> None:
    # codex 0.169 with env_key set and OPENAI_API_KEY empty (capataz refuses to start a
    # run whose secret is missing; a hand-written env could still produce it)
    reader = CodexReader()
    reader.feed("out", '{"type":"turn.started"}')
    reader.feed(
        "out", '{"type":"error","message":"Missing environment variable: `OPENAI_API_KEY`."}'
    )
    assert reader.failure is not None and reader.failure.fix == AUTH_FIX


@pytest.mark.parametrize(
    "line",
    [
        "Error: Unknown feature flag: no_such_feature_xyz",
        'Error finding codex home: CODEX_HOME points to "/tmp/x", but that path does not exist',
    ],
)
def test_exit_before_any_event_names_codex_own_error(line: str) -> None:
    # printed by codex 0.169 on stderr, exit code 1, no JSON event at all
    reader = CodexReader()
    assert reader.feed("err", line) is True
    assert reader.failure is None
    reader.finish(1)
    assert reader.failure is not None and line in reader.failure.reason


def test_exit_0_in_the_middle_of_a_turn_is_a_failure() -> None:
    reader = CodexReader()
    for line in ('{"type":"thread.started","thread_id":"t"}', '{"type":"turn.started"}'):
        reader.feed("out", line)
    reader.finish(0)
    assert reader.failure is not None and "no turn.completed" in reader.failure.reason


def test_inner_sandbox_failure_in_a_command_output() -> None:
    # The panic Codex's legacy sandbox printed (tool output seen by the fake model, with
    # `--sandbox workspace-write --enable use_legacy_landlock`), in the shape of a
    # recorded command_execution item.
    panic = (
        "\\nthread 'main' (137) panicked at linux-sandbox/src/linux_run_main.rs:391:9:\\n"
        "filesystem-restricted execution requires bubblewrap to isolate app-server sockets\\n"
    )
    item = (
        '{"type":"item.completed","item":{"id":"item_1","type":"command_execution",'
        '"command":"/usr/bin/bash -lc \\"true\\"","aggregated_output":"' + panic + '",'
        '"exit_code":101,"status":"failed"}}'
    )
    reader = CodexReader()
    assert reader.feed("out", item) is True
    assert reader.failure is not None and reader.failure.fix == SANDBOX_FIX
    assert "linux-sandbox/src/linux_run_main.rs" in reader.failure.reason


def test_a_command_that_merely_mentions_a_sandbox_is_no_failure() -> None:
    item = (
        '{"type":"item.completed","item":{"id":"item_1","type":"command_execution",'
        '"command":"grep -r sandbox .","aggregated_output":"docs/sandbox.md: the sandbox '
        'uses bwrap: see landlock\\n","exit_code":0,"status":"completed"}}'
    )
    reader = CodexReader()
    reader.feed("out", item)
    assert reader.failure is None


@pytest.mark.parametrize(
    ("message", "start"),
    [
        ("exceeded retry limit, last status: 429 Too Many Requests", "rate limited"),
        ("Quota exceeded. Check your plan and billing details.", "the model refused"),
        ("unexpected status 404 Not Found: nope, url: http://x/responses", "the model endpoint"),
        ("something else entirely", "codex failed: something else entirely"),
    ],
)
def test_classify_other_errors(message: str, start: str) -> None:
    assert classify(message).reason.startswith(start)
