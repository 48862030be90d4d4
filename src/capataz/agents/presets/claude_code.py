"""Claude Code (``claude``, the npm package @anthropic-ai/claude-code) as a preset.

What it runs: ``claude -p {instruction} --output-format stream-json --verbose
--permission-mode bypassPermissions``. Each flag is needed unattended: ``-p`` is the
non-interactive mode; ``stream-json`` (which requires ``--verbose``) is the event
stream the reader below turns into failures and usage; without a permission mode every
tool call is refused (nobody is there to approve it) and the CLI still exits 0. Bypassing
its permission prompts is right here because capataz is the sandbox: no network but the
endpoint, a throwaway HOME, a workspace whose result is judged before it lands.
``IS_SANDBOX=1`` says so to the CLI, which otherwise refuses that mode to root (the
unsandboxed backend, or a sandbox uid configured as 0).

The environment points it at ``endpoint`` (``ANTHROPIC_BASE_URL``) and turns off what a
sandboxed run must not try: auto-updates, telemetry, error reporting and other
non-essential traffic (``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``).

What it reads (``--output-format stream-json``, one JSON event per line):

* ``system/api_retry`` events are retry chatter (never progress). Their
  ``error_status`` says why: 401/403 fail the run at once (the key), a connection
  error (no status) fails it on the second attempt (no network: the CLI would retry
  ten times over minutes), 429/5xx are left to the CLI's own retries;
* ``system/permission_denied``: a tool call was refused, the run has failed;
* ``assistant``: each model message carries its ``usage``; summed by message id (one
  message may come as several events), it is the usage so far, so a budget stops the
  run while it goes rather than after its ``result``;
* ``result``: the usage (``usage``, ``total_cost_usd``, ``num_turns``, the model in
  ``modelUsage``) and, with ``is_error``, the agent's own error.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from capataz.agents.preset import (
    AgentFailure,
    OutputReader,
    Preset,
    PresetSettings,
    endpoint_address,
)

__all__ = ["ClaudeCode", "ClaudeCodeReader"]

CREDENTIAL = "ANTHROPIC_API_KEY"
_AUTH_FIX = f"store a valid key: capataz secret set {CREDENTIAL}"
_NETWORK_FIX = (
    'let it reach its model API: [agents.{agent}] network = ["{endpoint}"] (or network = '
    "true); if it may already, check that the endpoint ({endpoint}) answers"
)
_OFFLINE_ATTEMPTS = 2  # connection errors in a row before the run is called offline

# The run's budget (cgroup) and each process's address space (RLIMIT_AS). Measured with
# 2.1.328: its Bun runtime starts and works at 1 GiB of address space and aborts at
# start at 512 MiB (older builds died by SIGILL at 2 GiB); 4 GiB leaves room for a long
# session and the tools it runs, and keeps the run bounded where no cgroup is available.
MEMORY: int | None = 4 * 1024**3


def _number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _tokens_in(usage: dict[str, Any]) -> int:
    """Input tokens of a Messages API ``usage``, the cached ones included."""
    return sum(
        _number(usage.get(key))
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


class ClaudeCodeReader(OutputReader):
    """Reads Claude Code's ``stream-json`` events (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming = False  # an event was read: the command speaks stream-json
        self._result = False
        self._offline = 0
        self._last_words = ""  # the last plain line, for a CLI that died before its stream
        self._messages: dict[str, tuple[int, int]] = {}  # message id -> (tokens in, out)

    def feed(self, stream: str, text: str) -> bool:
        event = _event(text)
        if event is None:
            if text.strip():
                self._last_words = text.strip()
            return True
        self._streaming = True
        kind, subtype = event.get("type"), event.get("subtype")
        if kind == "system" and subtype == "api_retry":
            self._retry(event)
            return False
        self._offline = 0
        if kind == "system" and subtype == "init" and isinstance(event.get("model"), str):
            self.usage.model = event["model"]
        elif kind == "system" and subtype == "permission_denied":
            self._fail(
                f"the agent's tool call was refused: {event.get('message') or event}",
                "run it with --permission-mode bypassPermissions (the preset's command "
                "does; capataz is the sandbox)",
            )
        elif kind == "assistant" and not self._result:
            self._read_message(event)
        elif kind == "result":
            self._read_result(event)
        return True

    def finish(self, exit_code: int | None) -> None:
        if self.failure is not None or self._result or not self._streaming:
            return
        if exit_code in (None, 126, 127):
            return  # a signal or a missing file: capataz's own hints say more
        said = f": {self._last_words}" if self._last_words else ""
        self._fail(
            f"Claude Code ended (exit code {exit_code}) without reporting a result{said}",
            "read artifacts/run.log for what it printed last",
        )

    # -- events ---------------------------------------------------------------------

    def _fail(self, reason: str, fix: str) -> None:
        if self.failure is None:
            self.failure = AgentFailure(reason=reason, fix=fix)

    def _retry(self, event: dict[str, Any]) -> None:
        status = event.get("error_status")
        error = event.get("error") or "unknown error"
        attempt = _number(event.get("attempt"))
        if status in (401, 403):
            self._auth(status, str(error))
        elif status is None:
            self._offline += 1
            if self._offline >= _OFFLINE_ATTEMPTS:
                retries = _number(event.get("max_retries")) or "?"
                self._fail(
                    "the agent has no network: it cannot connect to its model API at "
                    f"{{endpoint}} (connection error: {error}; attempt {attempt}, the CLI "
                    f"would retry {retries} times)",
                    _NETWORK_FIX,
                )
        else:
            self._offline = 0  # a 429 or 5xx: the CLI's own retries are right

    def _auth(self, status: int, error: str) -> None:
        if status == 401:
            self._fail(f"401 from the model: {error} (the API key was refused)", _AUTH_FIX)
        else:
            self._fail(
                f"403 from the model: {error} (the key may not use this model or endpoint)",
                f"{_AUTH_FIX}, and check [agents.{{agent}}] model",
            )

    def _read_message(self, event: dict[str, Any]) -> None:
        """The usage so far, from one assistant message's ``usage`` (its ``result``,
        the CLI's own total, replaces it at the end)."""
        message = event.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
            return
        usage = message["usage"]
        key = str(message.get("id") or f"#{len(self._messages)}")
        self._messages[key] = (_tokens_in(usage), _number(usage.get("output_tokens")))
        self.usage.tokens_in = sum(used[0] for used in self._messages.values())
        self.usage.tokens_out = sum(used[1] for used in self._messages.values())
        self.usage.turns = len(self._messages)
        if isinstance(message.get("model"), str) and message["model"]:
            self.usage.model = message["model"]

    def _read_result(self, event: dict[str, Any]) -> None:
        self._result = True
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        self.usage.tokens_in = _tokens_in(usage)
        self.usage.tokens_out = _number(usage.get("output_tokens"))
        cost = event.get("total_cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.usage.cost_usd = float(cost)
        self.usage.turns = _number(event.get("num_turns"))
        models = event.get("modelUsage")
        if isinstance(models, dict) and models:
            self.usage.model = max(
                models,
                key=lambda m: (
                    _number((models[m] or {}).get("outputTokens"))
                    if isinstance(models[m], dict)
                    else 0
                ),
            )
        if event.get("is_error") or str(event.get("subtype", "")).startswith("error"):
            self._result_error(event)
        elif event.get("permission_denials"):
            denied = event["permission_denials"]
            self._fail(
                f"the agent's tool calls were refused ({len(denied)}): {denied}"[:500],
                "run it with --permission-mode bypassPermissions (the preset's command does)",
            )

    def _result_error(self, event: dict[str, Any]) -> None:
        status = event.get("api_error_status")
        said = str(event.get("result") or event.get("subtype") or "an error")[:300]
        if status in (401, 403):
            self._auth(int(status), said)
        elif status is None and "connection" in said.lower():
            self._fail(f"the agent has no network: {said}", _NETWORK_FIX)
        elif isinstance(status, int):
            self._fail(
                f"the model API kept failing ({status}): {said}",
                "the CLI gave up after its retries: check the endpoint's status and "
                "limits, then run the task again",
            )
        else:
            self._fail(
                f"the agent stopped with an error ({event.get('subtype') or 'is_error'}): {said}",
                "read artifacts/run.log for the agent's own account",
            )


def _event(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class ClaudeCode(Preset):
    name: ClassVar[str] = "claude-code"
    executable: ClassVar[str] = "claude"
    credential: ClassVar[str] = CREDENTIAL
    default_endpoint: ClassVar[str] = "https://api.anthropic.com"
    description: ClassVar[str] = "Claude Code (claude -p), Anthropic's coding agent"

    def settings(self, *, model: str | None, endpoint: str) -> PresetSettings:
        command = ["claude", "-p", "{instruction}", "--output-format", "stream-json"]
        command += ["--verbose", "--permission-mode", "bypassPermissions"]
        if model:
            command += ["--model", model]
        return PresetSettings(
            command=command,
            env={
                "ANTHROPIC_BASE_URL": endpoint,
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1",
                "IS_SANDBOX": "1",
            },
            secrets=[CREDENTIAL],
            memory=MEMORY,
            network=[endpoint_address(endpoint)],
            # What it writes into a project on its own: personal settings, worktrees
            # (EnterWorktree), scheduled tasks and its state. Sessions, memory and its
            # config live in HOME, which is thrown away.
            ignore=[
                ".claude/settings.local.json",
                ".claude/worktrees/",
                ".claude/scheduled_tasks.json",
                ".claude/scheduled_tasks.lock",
                ".claude/state/",
            ],
        )

    def reader(self) -> OutputReader:
        return ClaudeCodeReader()
