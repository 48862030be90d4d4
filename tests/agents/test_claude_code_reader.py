"""The Claude Code reader on stream-json lines as 2.1.328 prints them (trimmed)."""

from __future__ import annotations

import json
from typing import Any

from capataz.agents.presets import apply_preset, preset_named
from capataz.agents.presets.claude_code import ClaudeCodeReader
from capataz.config import parse_config


def retry(status: int | None, error: str, attempt: int = 1) -> str:
    return json.dumps(
        {
            "type": "system",
            "subtype": "api_retry",
            "attempt": attempt,
            "max_retries": 10,
            "retry_delay_ms": 526,
            "error_status": status,
            "error": error,
        }
    )


def result(**fields: Any) -> str:
    event = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 2,
        "total_cost_usd": 0.0112,
        "usage": {
            "input_tokens": 2400,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 50,
            "output_tokens": 80,
        },
        "modelUsage": {
            "claude-haiku-x": {"outputTokens": 5},
            "claude-opus-x": {"outputTokens": 75},
        },
        "permission_denials": [],
        **fields,
    }
    return json.dumps(event)


INIT = json.dumps({"type": "system", "subtype": "init", "model": "claude-opus-x"})


def test_a_401_retry_is_chatter_and_a_failure_at_once() -> None:
    reader = ClaudeCodeReader()
    assert reader.feed("out", INIT) is True
    assert reader.feed("out", retry(401, "authentication_failed")) is False
    assert reader.failure is not None
    assert reader.failure.reason == (
        "401 from the model: authentication_failed (the API key was refused)"
    )
    assert reader.failure.fix == "store a valid key: capataz secret set ANTHROPIC_API_KEY"


def test_connection_errors_fail_on_the_second_attempt_in_a_row() -> None:
    reader = ClaudeCodeReader()
    assert reader.feed("out", retry(None, "unknown", 1)) is False
    assert reader.failure is None  # one blip is the CLI's to retry
    reader.feed("out", retry(None, "unknown", 2))
    assert reader.failure is not None
    assert reader.failure.reason.startswith(
        "the agent has no network: it cannot connect to its model API at {endpoint}"
    )
    assert "[agents.{agent}] network" in reader.failure.fix


def test_rate_limits_and_server_errors_are_left_to_the_cli() -> None:
    reader = ClaudeCodeReader()
    assert reader.feed("out", retry(None, "unknown", 1)) is False
    assert reader.feed("out", retry(429, "rate_limit", 2)) is False  # breaks the offline run
    assert reader.feed("out", retry(None, "unknown", 3)) is False
    assert reader.feed("out", retry(529, "overloaded", 4)) is False
    assert reader.failure is None


def test_the_result_carries_the_usage() -> None:
    reader = ClaudeCodeReader()
    reader.feed("out", INIT)
    reader.feed("out", result())
    reader.finish(0)
    assert reader.failure is None
    usage = reader.usage
    assert (usage.tokens_in, usage.tokens_out, usage.turns) == (2550, 80, 2)
    assert usage.cost_usd == 0.0112 and usage.model == "claude-opus-x"


def test_an_error_result_is_a_failure_even_with_exit_zero() -> None:
    reader = ClaudeCodeReader()
    reader.feed("out", result(is_error=True, subtype="error_during_execution", result="boom"))
    reader.finish(0)
    assert reader.failure is not None
    assert reader.failure.reason == "the agent stopped with an error (error_during_execution): boom"
    auth = ClaudeCodeReader()
    auth.feed("out", result(is_error=True, api_error_status=401, result="Invalid API key"))
    assert auth.failure is not None and auth.failure.reason.startswith(
        "401 from the model: Invalid"
    )


def test_a_refused_tool_call_fails_the_run() -> None:
    reader = ClaudeCodeReader()
    denied = {
        "type": "system",
        "subtype": "permission_denied",
        "tool_name": "Write",
        "message": "Claude requested permissions to write to /w/a.txt, but you haven't granted it yet.",
    }
    reader.feed("out", json.dumps(denied))
    assert reader.failure is not None
    assert reader.failure.reason.startswith("the agent's tool call was refused: Claude requested")
    assert "--permission-mode bypassPermissions" in reader.failure.fix


def test_a_cli_that_died_before_its_result_says_its_last_words() -> None:
    reader = ClaudeCodeReader()
    reader.feed("out", INIT)
    reader.feed("err", "Error: something broke")
    reader.finish(1)
    assert reader.failure is not None
    assert reader.failure.reason == (
        "Claude Code ended (exit code 1) without reporting a result: Error: something broke"
    )
    missing = ClaudeCodeReader()
    missing.feed("err", "sh: 1: claude: not found")
    missing.finish(127)
    assert missing.failure is None  # capataz's own exit-127 hint says more
    plain = ClaudeCodeReader()  # a user's command without stream-json: nothing to judge
    plain.feed("out", "Done.")
    plain.finish(0)
    assert plain.failure is None


def test_the_preset_fills_what_the_user_left_unset() -> None:
    config = parse_config(
        '[agents.c]\npreset = "claude-code"\nmodel = "claude-x"\n'
        'endpoint = "http://127.0.0.1:8787"\nenv = { PATH = "/opt/bin:/usr/bin" }\n'
        'ignore = ["notes/"]\n'
    )
    agent = apply_preset(config.agents["c"])
    assert agent.command == [
        "claude",
        "-p",
        "{instruction}",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--model",
        "claude-x",
    ]
    assert agent.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert agent.env["PATH"] == "/opt/bin:/usr/bin" and agent.env["IS_SANDBOX"] == "1"
    assert agent.secrets == ["ANTHROPIC_API_KEY"] and agent.memory == 4 * 1024**3
    assert agent.ignore[-1] == "notes/" and ".claude/settings.local.json" in agent.ignore
    assert apply_preset(agent) == agent  # applying twice changes nothing
    assert preset_named("claude-code").credential == "ANTHROPIC_API_KEY"


def assistant(message_id: str, tokens_in: int, tokens_out: int) -> str:
    usage = {"input_tokens": tokens_in, "cache_read_input_tokens": 10, "output_tokens": tokens_out}
    message = {"id": message_id, "model": "claude-sonnet-4-5", "usage": usage, "content": []}
    return json.dumps({"type": "assistant", "message": message})


def test_usage_grows_with_each_assistant_message_then_the_result_is_the_total() -> None:
    reader = ClaudeCodeReader()
    reader.feed("out", assistant("msg_1", 1000, 20))
    assert (reader.usage.tokens_in, reader.usage.tokens_out, reader.usage.turns) == (1010, 20, 1)
    reader.feed("out", assistant("msg_1", 1000, 30))  # the same message, another block
    reader.feed("out", assistant("msg_2", 2000, 40))
    assert (reader.usage.tokens_in, reader.usage.tokens_out, reader.usage.turns) == (3020, 70, 2)
    assert reader.usage.model == "claude-sonnet-4-5"
    reader.feed("out", result())
    assert (reader.usage.tokens_in, reader.usage.tokens_out) == (2550, 80)  # the CLI's own
    assert reader.usage.turns == 2
