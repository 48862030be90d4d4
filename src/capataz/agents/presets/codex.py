"""The Codex CLI preset: ``codex exec --json`` run unattended inside capataz's sandbox.

What the command line does, and why (observed with Codex CLI 0.169 against a local
Responses API server, inside capataz's bubblewrap sandbox):

* ``exec --json``: the non-interactive mode; every event is one JSON line on stdout
  (``thread.started``, ``turn.started``, ``item.*``, ``turn.completed`` with ``usage``,
  ``turn.failed``, ``error``), which is what :class:`CodexReader` reads.
* ``--dangerously-bypass-approvals-and-sandbox``: Codex's own sandbox (bubblewrap,
  seccomp, landlock) off and approvals off; capataz is the sandbox. Inside it, the
  ``exec`` default (read-only) rejects every edit ("patch rejected: writing is blocked
  by read-only sandbox"), the legacy landlock sandbox panics ("filesystem-restricted
  execution requires bubblewrap"; older releases: "codex-linux-sandbox: No such file"),
  and Codex still exits 0, so the run would end as "no changes".
* ``--skip-git-repo-check``: insurance. With its sandbox on, Codex refuses a directory
  outside a trusted Git repository ("Not inside a trusted directory"); capataz
  workspaces are Git clones and the sandbox is off, so 0.169 runs without it, but a
  command that swaps the bypass for a ``--sandbox`` mode must not stop there.
* a provider of our own (``-c model_provider=capataz`` plus its table): the endpoint,
  the Responses wire API, the key from ``OPENAI_API_KEY`` (``env_key``), and few
  retries (``request_max_retries``, ``stream_max_retries``) so a 401 or an unreachable
  endpoint fails in about a second instead of after minutes of backoff.
* ``features.unbounded_connection_retries=false``: by default a connection failure is
  retried forever ("Reconnecting... waiting for network", every 5 s up to 60 s apart),
  and each of those lines used to reset the idle watchdog until the wall timeout.
* ``analytics.enabled=false`` and ``features.plugins=false``: otherwise Codex contacts
  ab.chatgpt.com, chatgpt.com and api.github.com on every run, hosts the network
  allowlist denies (each denial a violation) and that have no business in a task.
* ``features.shell_snapshot=false``: at start Codex snapshots the user's shell
  environment with a login shell of its own (``bash -lc``, sourcing ``~/.bashrc``) in a
  session of its own, and does not wait for it. A task that ends first leaves that
  shell behind, which the sandbox reports as a leftover process (high: blocked); the
  snapshot is of a throwaway HOME anyway.
* ``--ephemeral``: no session files (the transcripts) are kept; nothing resumes them.
* ``--`` before the instruction: an instruction starting with ``-`` stays the prompt.

``CODEX_HOME`` is left unset on purpose: Codex then creates ``$HOME/.codex``, and HOME
is a throwaway directory under both sandbox backends, outside the workspace. An
explicit path would have to exist beforehand (Codex refuses a missing CODEX_HOME) and
would differ between backends. Codex writes nothing into the working tree. Its stderr
warning about "PATH aliases ... under temporary dir" is expected there and harmless:
the edit tools work without the aliases.

Memory: ``codex`` is a Node launcher that execs a Rust binary; Node dies with SIGTRAP
below about 700 MiB of address space (V8 reserves its code range up front). 2 GiB
leaves room for the commands Codex runs.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from capataz.agents.preset import (
    AgentFailure,
    AgentUsage,
    OutputReader,
    Preset,
    PresetSettings,
    endpoint_address,
)

__all__ = ["CodexPreset", "CodexReader", "classify", "codex_command"]

CREDENTIAL = "OPENAI_API_KEY"
PROVIDER = "capataz"
# A 401 or an unreachable endpoint ends after 1 + these attempts (~1 s); a 429 or a
# dropped stream still gets a second chance.
REQUEST_RETRIES = 1
STREAM_RETRIES = 2
MEMORY = 2 * 1024**3
# "Reconnecting... waiting for network" lines (only with unbounded retries back on,
# e.g. a hand-written command): fail after this many instead of waiting forever.
MAX_WAITING_FOR_NETWORK = 3

AUTH_FIX = f"store the key: capataz secret set {CREDENTIAL}"
NETWORK_FIX = (
    "let the agent reach its model endpoint: its host:port must be in the agent's "
    "network allowlist (the codex preset allows its endpoint), and the endpoint must be up"
)
SANDBOX_FIX = (
    "turn Codex's own sandbox off, capataz is the sandbox: keep "
    "--dangerously-bypass-approvals-and-sandbox (or --sandbox danger-full-access) in "
    "the agent's command"
)


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML ones)."""
    return json.dumps(value, ensure_ascii=False)


def codex_command(*, model: str | None, endpoint: str) -> list[str]:
    """The argv of one unattended Codex run (``{instruction}`` is filled in later)."""
    provider = (
        f"model_providers.{PROVIDER}={{"
        f"name = {_toml_string('capataz endpoint')}, "
        f"base_url = {_toml_string(endpoint)}, "
        f"env_key = {_toml_string(CREDENTIAL)}, "
        'wire_api = "responses", '
        f"request_max_retries = {REQUEST_RETRIES}, "
        f"stream_max_retries = {STREAM_RETRIES}}}"
    )
    command = [
        "codex",
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--ephemeral",
        "-c",
        f"model_provider={PROVIDER}",
        "-c",
        provider,
        "-c",
        "features.unbounded_connection_retries=false",
        "-c",
        "features.plugins=false",
        "-c",
        "features.shell_snapshot=false",
        "-c",
        "analytics.enabled=false",
    ]
    if model is not None:
        command += ["-m", model]
    return [*command, "--", "{instruction}"]


class CodexPreset(Preset):
    name: ClassVar[str] = "codex"
    executable: ClassVar[str] = "codex"
    credential: ClassVar[str] = CREDENTIAL
    default_endpoint: ClassVar[str] = "https://api.openai.com/v1"
    description: ClassVar[str] = (
        "OpenAI Codex CLI (codex exec --json), its own sandbox off: capataz is the sandbox"
    )

    def settings(self, *, model: str | None, endpoint: str) -> PresetSettings:
        return PresetSettings(
            command=codex_command(model=model, endpoint=endpoint),
            secrets=[CREDENTIAL],
            memory=MEMORY,
            network=[endpoint_address(endpoint)],
        )

    def reader(self) -> CodexReader:
        return CodexReader()


# Codex's own retry notices: progress for nobody, so they must not feed the watchdog.
_RECONNECTING = re.compile(r"^Reconnecting\.\.\.\s*(?:(\d+)/(\d+)|waiting for network)")
_WAITING = "waiting for network"
_AUTH = re.compile(r"\b401 Unauthorized\b|\bstatus 401\b|\binvalid_api_key\b")
_MISSING_KEY = re.compile(rf"\b{CREDENTIAL}\b.*(?:not set|missing|Missing)|Missing environment")
_NETWORK = re.compile(
    r"Connection failed|error sending request|stream disconnected|[Cc]onnection refused|"
    r"dns error|failed to lookup address|[Nn]etwork is unreachable|error trying to connect|"
    r"idle timeout waiting for SSE|stream closed before response\.completed",
)
_RATE = re.compile(r"\b429\b|rate limit", re.IGNORECASE)
_QUOTA = re.compile(r"[Qq]uota exceeded|insufficient_quota|out of credits")
_NOT_FOUND = re.compile(r"\b404 Not Found\b|model_not_found|[Tt]he model \S+ does not exist")
# Codex's inner sandbox failing, in its own words (stderr logs) or in a command's output.
# Deliberately narrow in command output: an agent may legitimately print "sandbox".
_SANDBOX = re.compile(
    r"codex-linux-sandbox|linux-sandbox/src/|requires bubblewrap|"
    r"blocked by read-only sandbox|Landlock was not able|^bwrap: ",
    re.MULTILINE,
)
_QUIET_STDERR = (
    "Reading additional input from stdin",
    "WARNING: proceeding, even though we could not create PATH aliases",
)
_URL_TAIL = re.compile(r",\s*url:\s*\S+\s*$")


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def classify(message: str) -> AgentFailure:
    """What a fatal Codex error means and what the user should change."""
    text = _short(_URL_TAIL.sub("", message))
    if _AUTH.search(message):
        detail = text.split("401 Unauthorized:", 1)[-1].strip() or text
        return AgentFailure(f"401 from the model: {detail}", AUTH_FIX)
    if _MISSING_KEY.search(message):
        return AgentFailure(f"the model key is missing: {text}", AUTH_FIX)
    if _SANDBOX.search(message):
        return AgentFailure(f"Codex's own sandbox cannot run inside capataz's: {text}", SANDBOX_FIX)
    if _QUOTA.search(message):
        return AgentFailure(
            f"the model refused: {text}", "check the plan and billing of the key's account"
        )
    if _RATE.search(message):
        return AgentFailure(
            f"rate limited by the model after retries: {text}",
            "retry later, or use a key with a higher rate limit",
        )
    if _NETWORK.search(message):
        return AgentFailure(f"the agent has no network: {text}", NETWORK_FIX)
    if _NOT_FOUND.search(message):
        return AgentFailure(
            f"the model endpoint answered 404: {text}",
            "check the agent's endpoint (the API's base URL, e.g. https://api.openai.com/v1) "
            "and model",
        )
    return AgentFailure(f"codex failed: {text}", "see the agent's output in the run log")


class CodexReader(OutputReader):
    """Reads ``codex exec --json``: usage from ``turn.completed``, failures from
    ``error`` / ``turn.failed`` events and Codex's stderr, retry notices as chatter.

    A 401 fails at its first sighting, even inside a retry notice: no retry fixes a key.
    Other retry notices are chatter, and the failure comes with the error that ends the
    retries. ``usage.model`` is only known when Codex names it (it does so for a model
    it has no metadata for); pass ``model`` to set it from the configuration."""

    def __init__(self, model: str | None = None) -> None:
        super().__init__()
        self.usage = AgentUsage(model=model)
        self._waiting = 0
        self._finished_turns = 0
        self._last_error: str | None = None

    def _fail(self, failure: AgentFailure) -> None:
        if self.failure is None:  # the first cause is the one to report
            self.failure = failure

    def feed(self, stream: str, text: str) -> bool:
        line = text.strip()
        event = _json_object(line) if stream == "out" else None
        if event is None:
            return self._plain(stream, line)
        kind = event.get("type")
        if kind == "turn.started":
            self.usage.turns += 1
        elif kind == "turn.completed":
            self._finished_turns += 1
            self._add_usage(event.get("usage"))
        elif kind == "turn.failed":
            self._finished_turns += 1
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self._fail(classify(str(message or line)))
        elif kind == "error":
            return self._error(str(event.get("message") or ""))
        elif isinstance(kind, str) and kind.startswith("item."):
            self._item(event.get("item"))
        return True

    def _error(self, message: str) -> bool:
        retry = _RECONNECTING.match(message)
        if retry is None:  # the error that ends the turn (turn.failed follows)
            self._fail(classify(message))
            return True
        if _AUTH.search(message):
            self._fail(classify(message))
        elif _WAITING in message[: retry.end()]:
            self._waiting += 1
            if self._waiting >= MAX_WAITING_FOR_NETWORK:
                self._fail(classify(message))
        return False

    def _item(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind == "command_execution":
            output = str(item.get("aggregated_output") or "")
            found = _SANDBOX.search(output)
            if found is not None:
                start = output.rfind("\n", 0, found.start()) + 1
                end = output.find("\n", found.end())
                self._fail(classify(output[start : end if end >= 0 else None]))
        elif kind == "error" and self.usage.model is None:
            named = re.match(r"Model metadata for `([^`]+)` not found", str(item.get("message")))
            if named is not None:
                self.usage.model = named.group(1)

    def _plain(self, stream: str, line: str) -> bool:
        """A line that is not a JSON event: Codex's stderr (its logs, its start-up
        errors), or the human output of a command line without ``--json``."""
        if not line:
            return False
        if line.startswith(_QUIET_STDERR):
            return False
        if _SANDBOX.search(line) or _AUTH.search(line):
            self._fail(classify(line))
        if stream == "err" and re.match(r"(?:Error|ERROR)\b", line):
            self._last_error = line
        return True

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self.usage.tokens_in += _int(usage.get("input_tokens"))
        self.usage.tokens_out += _int(usage.get("output_tokens"))

    def finish(self, exit_code: int | None) -> None:
        if self.failure is not None or exit_code is None:
            return
        if exit_code != 0:
            # Codex stopped before any event said why: a bad flag, a missing CODEX_HOME.
            why = self._last_error or f"codex exited with code {exit_code}"
            self._fail(classify(why))
        elif self.usage.turns > self._finished_turns:
            self._fail(
                AgentFailure(
                    "codex exited 0 in the middle of its turn (no turn.completed)",
                    "see the agent's output in the run log",
                )
            )


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
