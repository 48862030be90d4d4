"""The aider preset: the command it builds, and its reader on aider's REAL output.

The files in tests/agents/recorded/aider/ are what aider 0.86.2 printed inside capataz's
sandbox against tests/agents/fake_models/openai_chat.py, recorded by
``python bench/agent_aider.py --record tests/agents/recorded/aider`` (``stream``, tab,
text per line, exactly as run.log holds them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.agents.commands import render_command, resolve_agent
from capataz.agents.preset import AgentFailure
from capataz.agents.presets import PRESETS, preset_named
from capataz.agents.presets.aider import AiderPreset, AiderReader, parse_count
from capataz.config import parse_config

RECORDED = Path(__file__).parent / "recorded" / "aider"
ENDPOINT = "http://127.0.0.1:8787/v1"


def recorded(name: str) -> list[tuple[str, str]]:
    lines = (RECORDED / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [(stream, text) for stream, _, text in (line.partition("\t") for line in lines)]


def read(name: str, exit_code: int | None = 0) -> tuple[AiderReader, int | None, list[bool]]:
    """Feed a recorded run; return the reader, the index of the line on which it
    failed the run (None: not while feeding) and what ``feed`` returned per line."""
    reader = AiderReader()
    failed_at: int | None = None
    progress = []
    for index, (stream, text) in enumerate(recorded(name)):
        progress.append(reader.feed(stream, text))
        if reader.failure is not None and failed_at is None:
            failed_at = index
    reader.finish(exit_code)
    return reader, failed_at, progress


# -- the command ------------------------------------------------------------------


def test_aider_is_a_registered_preset() -> None:
    assert PRESETS["aider"] is AiderPreset
    assert isinstance(preset_named("aider"), AiderPreset)


def test_settings_run_aider_unattended_with_nothing_in_the_tree() -> None:
    settings = AiderPreset().settings(model="fake-model", endpoint=ENDPOINT)
    command = settings.command
    assert command[:4] == ["aider", "--message", "{instruction}", "--yes-always"]
    assert command.count("{instruction}") == 1

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert value("--model") == "openai/fake-model"
    assert value("--openai-api-base") == ENDPOINT  # argv beats a project's .env
    assert value("--map-tokens") == "0"  # no .aider.tags.cache.v4/ in the tree
    for flag in ("--chat-history-file", "--input-history-file", "--llm-history-file"):
        assert value(flag).startswith("/tmp/"), flag  # the sandbox's private tmpfs
    for flag in (
        "--no-auto-commits",
        "--no-dirty-commits",
        "--no-gitignore",
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--no-detect-urls",
        "--no-pretty",
    ):
        assert flag in command
    assert settings.secrets == ["OPENAI_API_KEY"]
    assert all("KEY" not in name for name in settings.env)  # the key comes from the vault
    assert settings.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert settings.env["GIT_INDEX_FILE"].startswith("/tmp/")
    assert settings.network == ["127.0.0.1:8787"]
    assert settings.ignore == [".aider*"]
    assert settings.memory == 2 * 1024**3


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, "openai/gpt-4o"),
        ("gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openai/gpt-4.1", "openai/gpt-4.1"),
        ("meta-llama/Llama-3.3-70B", "openai/meta-llama/Llama-3.3-70B"),  # a vLLM name
    ],
)
def test_every_model_goes_through_the_openai_compatible_client(
    model: str | None, expected: str
) -> None:
    command = AiderPreset().settings(model=model, endpoint=ENDPOINT).command
    assert command[command.index("--model") + 1] == expected


def test_a_preset_agent_resolves_to_the_aider_command_and_user_keys_win() -> None:
    config = parse_config(
        f"""
[agents.coder]
preset = "aider"
model = "qwen2.5-coder"
endpoint = "{ENDPOINT}"
timeout = "20m"
ignore = ["notes/**"]
[agents.coder.env]
COLUMNS = "200"
"""
    )
    agent = resolve_agent(config, "coder")
    argv = render_command(agent, instruction='"; rm -rf ~', workspace=Path("/w"), task_id="t")
    assert argv[:3] == ["aider", "--message", '"; rm -rf ~']
    assert agent.secrets == ["OPENAI_API_KEY"]
    assert agent.timeout == 1200
    assert agent.ignore == [".aider*", "notes/**"]
    assert agent.env["COLUMNS"] == "200"  # the user's value
    assert agent.env["BROWSER"] == "true"  # the preset's, merged in


# -- the reader, on recorded output -----------------------------------------------


def test_a_landed_edit_reports_usage_and_no_failure() -> None:
    reader, failed_at, _ = read("edit")
    assert failed_at is None and reader.failure is None
    usage = reader.usage
    assert (usage.tokens_in, usage.tokens_out, usage.turns) == (597, 19, 1)
    assert usage.model == "openai/fake-model"
    assert usage.cost_usd is None  # aider prints a cost only for models it has prices for


def test_a_model_with_prices_reports_its_cost() -> None:
    reader, _, _ = read("edit-priced-model")
    assert reader.failure is None
    assert (reader.usage.tokens_in, reader.usage.tokens_out) == (1900, 26)
    assert reader.usage.cost_usd == pytest.approx(0.005)
    assert reader.usage.model == "openai/gpt-4o"


def test_a_429_the_client_retried_is_no_failure() -> None:
    reader, _, _ = read("rate-limited-then-edit")
    assert reader.failure is None and reader.usage.turns == 1


def test_a_401_fails_at_its_line_with_the_credential_fix() -> None:
    reader, failed_at, _ = read("unauthorized")
    lines = recorded("unauthorized")
    assert failed_at is not None
    assert lines[failed_at][1].startswith("litellm.AuthenticationError")
    assert reader.failure == AgentFailure(
        reason="401 from the model: Incorrect API key provided: sk-***6789. You can find your "
        "API key at https://platform.openai.com/account/api-keys.",
        fix="store the key: capataz secret set OPENAI_API_KEY",
    )


def test_no_network_fails_at_the_first_connection_error_and_retries_are_chatter() -> None:
    reader, failed_at, progress = read("no-network")
    lines = recorded("no-network")
    assert failed_at is not None
    first = next(i for i, (_, text) in enumerate(lines) if "Connection error." in text)
    assert failed_at == first  # not after aider's ~80 s of retries
    assert reader.failure is not None
    assert reader.failure.reason == "the agent has no network: Connection error."
    assert "network" in reader.failure.fix and "endpoint" in reader.failure.fix
    for (_, text), counted in zip(lines, progress, strict=True):
        if text.startswith(("Retrying in", "litellm.", "The API provider")):
            assert not counted, text  # never resets the idle watchdog


def test_an_unknown_model_fails_at_once() -> None:
    reader, failed_at, _ = read("model-not-found")
    assert failed_at is not None and reader.failure is not None
    assert reader.failure.reason == (
        "the model was not found: The model `fake-model` does not exist or you do not have "
        "access to it."
    )
    assert "`model`" in reader.failure.fix


def test_a_rate_limit_aider_gives_up_on_fails_at_the_end_not_before() -> None:
    reader, failed_at, progress = read("rate-limited")
    assert failed_at is None  # aider might still get through while it retries
    assert reader.failure is not None
    assert reader.failure.reason.startswith(
        "the model API kept failing and aider gave up: Rate limit reached for fake-model"
    )
    assert "rate limit" in reader.failure.fix
    lines = recorded("rate-limited")
    assert not any(
        counted for (_, text), counted in zip(lines, progress, strict=True) if "Rate" in text
    )


def test_an_edit_aider_cannot_apply_fails_when_it_stops_reflecting() -> None:
    reader, failed_at, _ = read("refused-edit")
    lines = recorded("refused-edit")
    assert failed_at is not None
    assert lines[failed_at][1] == "Only 3 reflections allowed, stopping."
    assert reader.failure is not None
    assert reader.failure.reason == (
        "aider could not apply the model's edits: SearchReplaceNoExactMatch: This SEARCH "
        "block failed to exactly match lines in README.md"
    )
    assert reader.usage.turns == 4
    assert reader.usage.tokens_in == 2000 + 2100 + 2200 + 2400
    assert reader.usage.cost_usd == pytest.approx(0.02)  # the last session total


def test_a_crash_names_the_exception_and_the_missing_git_identity() -> None:
    reader, failed_at, _ = read("no-git-identity", exit_code=1)
    assert failed_at is None and reader.failure is not None
    assert reader.failure.reason.startswith(
        "aider crashed: OSError: [Errno 30] Read-only file system: "
    )
    assert reader.failure.reason.endswith(".git/config.lock'")
    assert "git user.name and user.email" in reader.failure.fix


def test_an_exit_without_any_answer_is_a_failure() -> None:
    reader = AiderReader()
    for text in ("Aider v0.86.2", "Model: openai/x with whole edit format", ""):
        reader.feed("out", text)
    reader.finish(0)
    assert reader.failure is not None
    assert reader.failure.reason == "aider ended without an answer from the model"


def test_housekeeping_lines_are_chatter_and_the_answer_is_progress() -> None:
    reader = AiderReader()
    assert not reader.feed(
        "out",
        "Could not find a suitable TLS CA certificate bundle, invalid path: "
        "/dev/null/capataz-no-model-metadata-download",
    )
    assert not reader.feed("out", "")
    assert not reader.feed("out", "Retrying in 0.2 seconds...")
    assert reader.feed("out", "I will write hello.txt.")
    assert reader.feed("out", "Applied edit to hello.txt")
    assert reader.failure is None


def test_cache_hit_and_write_usage_with_the_cost_on_its_own_line() -> None:
    """Formats taken from aider 0.86.2's base_coder.calculate_and_show_tokens_and_cost
    (no recording: the fake model reports no prompt caching): with both cache hits and
    writes, the cost goes on a line of its own."""
    reader = AiderReader()
    reader.feed("out", "Tokens: 12k sent, 1.0k cache write, 9.5k cache hit, 345 received.")
    reader.feed("out", "Cost: $0.01 message, $0.02 session.")
    assert (reader.usage.tokens_in, reader.usage.tokens_out) == (12_000, 345)
    assert reader.usage.cost_usd == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("text", "count"), [("597", 597), ("1.9k", 1900), ("12k", 12_000), ("1.2M", 1_200_000)]
)
def test_token_counts_as_aider_prints_them(text: str, count: int) -> None:
    assert parse_count(text) == count
