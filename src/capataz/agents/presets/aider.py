"""The aider preset (aider-chat 0.86): one unattended ``--message`` run per task.

aider is built for a person at a terminal, so left to its defaults inside capataz's
sandbox it misbehaves in ways that all look like success (issue 11): it writes history
files and a binary repo-map cache into the tree, crashes writing a git identity into the
read-only ``.git/config``, loses a new file's content when ``git add`` cannot write the
read-only index, retries an unreachable endpoint for about 80 s and exits 0, and exits 0
after a 401. Each flag and variable below answers one of those; the reader turns aider's
printed errors into failures.

What the command does and why:

* ``--message {instruction} --yes-always``: one request, no prompts (shell commands the
  model suggests still need an explicit yes, so they are never run; and
  ``--no-suggest-shell-commands`` keeps them out of the prompt).
* ``--no-auto-commits --no-dirty-commits``: capataz commits the result itself, and the
  sandbox's ``.git`` is read-only anyway.
* ``--no-gitignore``: aider would append ``.aider*`` to the project's ``.gitignore``.
* history files (``--chat-history-file`` and friends) go to ``/tmp``, the sandbox's
  private tmpfs, instead of ``.aider.*.history*`` in the tree.
* ``--map-tokens 0``: no repo map, so no ``.aider.tags.cache.v4/`` (a SQLite cache) in
  the tree. Files the instruction names are still added to the chat (aider finds them
  in git); override ``command`` to get the map back once ``ignore`` keeps the cache out.
* ``--no-check-update --no-show-release-notes --no-analytics --no-detect-urls
  --disable-playwright``: nothing reaches out beyond the model endpoint (the allowlist
  would log each attempt as a violation) and nothing waits on a question.
* ``--no-pretty --no-fancy-input``: plain lines, no terminal control codes.
* ``--model openai/<model> --openai-api-base <endpoint>``: litellm's OpenAI-compatible
  client for any endpoint. The base URL is on the command line, not in the environment,
  because aider loads a repository's ``.env`` over its environment (override=True), and
  the command line wins over both.

The environment:

* ``OPENAI_API_KEY`` comes from the vault (``secrets``), never the command line.
* ``LITELLM_LOCAL_MODEL_COST_MAP=True``: litellm otherwise downloads its model price
  list from GitHub at import.
* ``REQUESTS_CA_BUNDLE`` points at a path that cannot exist: aider downloads that same
  list itself (with ``requests``) for every model it looks up, on every run, and has no
  switch for it. With no CA bundle the download fails before any connection is made (one
  line, "Could not find a suitable TLS CA certificate bundle", which the reader ignores)
  and aider falls back to litellm's bundled copy. litellm's own calls to the model use
  httpx, which does not read this variable. Set it to "" in ``env`` to allow the download.
* ``GIT_INDEX_FILE``, ``GIT_OBJECT_DIRECTORY`` and ``GIT_ALTERNATE_OBJECT_DIRECTORIES``:
  aider runs ``git add`` on every file it creates, and a failed ``git add`` throws the
  new file's content away (the file stays empty). These give git a private index and
  object directory on ``/tmp`` and keep the real objects readable (relative to the tree,
  where aider runs git), so ``git add`` works and nothing reaches the real ``.git``.
  The private index starts empty, so ``git status`` inside aider sees every tracked file
  as staged for deletion; aider asks git for that only before dirty commits (off) and in
  slash commands (``/commit``, ``/lint``, ``/undo``) that a task does not use.
* ``BROWSER=true``: with ``--yes-always`` aider "opens" every URL it offers (the key's
  help page after a 401, the model-warnings page); this makes that a no-op.
* ``COLUMNS=4096``: aider prints through rich, which wraps at 80 columns without a
  terminal, splitting the error lines the reader matches.

aider also reads ``.aider.conf.yml``, ``.env`` and ``.aider.model.*`` files from the
repository if the project has them; the flags above win over a config file, and
everything aider does still happens inside the sandbox. One catch: a project ``.env``
that sets ``OPENAI_API_KEY`` replaces the vault's key for aider (it loads ``.env`` with
override), and that key is then sent to the configured endpoint.

Usage: aider prints ``Tokens: 2.4k sent, 26 received. Cost: $0.0063 message, $0.0063
session.`` after each reply (the cost only for models it knows prices for). While
streaming, the token counts are aider's own tokenizer estimates.
"""

from __future__ import annotations

import re

from capataz.agents.preset import (
    AgentFailure,
    OutputReader,
    Preset,
    PresetSettings,
    endpoint_address,
)

__all__ = ["AiderPreset", "AiderReader"]

DEFAULT_MODEL = "gpt-4o"
# Paths on the sandbox's private /tmp, gone with the run.
CHAT_HISTORY = "/tmp/aider.chat.history.md"
INPUT_HISTORY = "/tmp/aider.input.history"
LLM_HISTORY = "/tmp/aider.llm.history"
NO_CA_BUNDLE = "/dev/null/capataz-no-model-metadata-download"

CREDENTIAL_FIX = "store the key: capataz secret set OPENAI_API_KEY"
NETWORK_FIX = (
    "let the agent reach its model endpoint: its [agents.NAME] `network` must allow the "
    "endpoint's host:port (a preset allows its `endpoint` by default), and `endpoint` "
    "must be the model API's base URL"
)


class AiderPreset(Preset):
    name = "aider"
    executable = "aider"
    credential = "OPENAI_API_KEY"
    default_endpoint = "https://api.openai.com/v1"
    description = "aider (aider-chat) against an OpenAI-compatible endpoint"

    def settings(self, *, model: str | None, endpoint: str) -> PresetSettings:
        name = model or DEFAULT_MODEL
        if not name.startswith("openai/"):
            name = f"openai/{name}"  # litellm's OpenAI-compatible client, whatever the name
        command = [
            "aider",
            "--message",
            "{instruction}",
            "--yes-always",
            "--model",
            name,
            "--openai-api-base",
            endpoint,
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--map-tokens",
            "0",
            "--chat-history-file",
            CHAT_HISTORY,
            "--input-history-file",
            INPUT_HISTORY,
            "--llm-history-file",
            LLM_HISTORY,
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-detect-urls",
            "--disable-playwright",
            "--no-suggest-shell-commands",
            "--no-pretty",
            "--no-fancy-input",
        ]
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "REQUESTS_CA_BUNDLE": NO_CA_BUNDLE,
            "GIT_INDEX_FILE": "/tmp/aider.git-index",
            "GIT_OBJECT_DIRECTORY": "/tmp",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": ".git/objects",
            "BROWSER": "true",
            "COLUMNS": "4096",
        }
        return PresetSettings(
            command=command,
            env=env,
            secrets=[self.credential],
            memory=2 * 1024**3,  # peaks near 210 MiB resident; runs in 768 MiB of address space
            network=[endpoint_address(endpoint)],
            ignore=[".aider*"],  # whatever a project's .aider.conf.yml still puts in the tree
        )

    def reader(self) -> AiderReader:
        return AiderReader()


# -- reading aider's output --------------------------------------------------------

_TOKENS = re.compile(
    r"^Tokens: (?P<sent>[\d.]+[kM]?) sent(?:, [\d.]+[kM]? cache write)?"
    r"(?:, [\d.]+[kM]? cache hit)?, (?P<received>[\d.]+[kM]?) received\.(?: (?P<cost>Cost: .*))?$"
)
_COST = re.compile(r"^Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.$")
_MODEL = re.compile(r"^(?:Main model|Model): (?P<model>\S+) with \S+ edit format")
_API_ERROR = re.compile(r"^litellm\.(?P<kind>\w+): (?:(?P=kind): )?(?P<message>.*)$")
_RETRYING = re.compile(r"^Retrying in [\d.]+ seconds\.\.\.$")
_NO_NETWORK = re.compile(
    r"Connection error|APIConnectionError|Connection refused|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|No route to host",
    re.IGNORECASE,
)
_URL_ONLY = re.compile(r"^https?://\S+$")  # a URL aider offers to open after an error
_REFLECTIONS = re.compile(r"^Only \d+ reflections allowed, stopping\.$")
_CRASH = re.compile(r"^# Uncaught (?P<kind>\w+) in ")
_TRACEBACK_END = re.compile(r"^(?P<kind>[A-Za-z_][\w.]*(?:Error|Exception)): (?P<message>.+)$")
_MISSING_KEY = re.compile(r"^- (?P<key>[A-Z][A-Z0-9_]*): Not set$")
# Lines about aider's own housekeeping that say nothing about the task's progress.
_CHATTER = (
    "Could not find a suitable TLS CA certificate bundle",  # the metadata download, refused
    "HTTPSConnectionPool(host='raw.githubusercontent.com'",  # the same, where it was tried
    "The API provider's servers are down or overloaded.",
    "The API provider has rate limited you.",
    "The API provider timed out without returning a response.",
    "Detected dumb terminal",
)
# Errors aider retries (aider/exceptions.py); every other API error ends the request.
_RETRIED = frozenset(
    {
        "APIConnectionError",
        "APIError",
        "APIResponseValidationError",
        "BadGatewayError",
        "InternalServerError",
        "JSONSchemaValidationError",
        "OpenAIError",
        "RateLimitError",
        "RouterRateLimitError",
        "ServiceUnavailableError",
        "Timeout",
        "UnprocessableEntityError",
    }
)


def parse_count(text: str) -> int:
    """aider's token counts: ``594``, ``2.4k``, ``12k`` (and ``1.2M``, to be safe)."""
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    return round(float(number) * scale)


def _clean(message: str) -> str:
    return message.removeprefix("OpenAIException - ").strip()


class AiderReader(OutputReader):
    """Reads aider's plain output (``--no-pretty``) line by line.

    aider reports every problem as a printed line and then exits 0, so the reader is
    what makes a failure a failure: a 401 or an unknown model at once; an unreachable
    endpoint at its first "Connection error." (the OpenAI client has already retried
    twice by then; aider would go on for another ~80 s); a retried error (429, 5xx) only
    if aider gives up on it, which :meth:`finish` sees."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: tuple[str, str] | None = None  # a retried API error: (kind, message)
        self._refused: str | None = None  # why the last edit could not be applied
        self._crash: str | None = None  # the exception kind of an uncaught crash
        self._git_failed = False
        self._expects_keys = False
        self._replies = 0

    def feed(self, stream: str, text: str) -> bool:
        line = text.strip()
        if not line or line.startswith(_CHATTER) or _RETRYING.match(line) or _URL_ONLY.match(line):
            return False
        if self._usage(line):
            return True
        error = _API_ERROR.match(line)
        if error:
            return self._api_error(error.group("kind"), _clean(error.group("message")))
        self._pending = None  # anything else after an error: aider got past it
        self._edits(line)
        self._crashes(line)
        self._keys(line)
        return True

    def finish(self, exit_code: int | None) -> None:
        if self.failure is not None:
            return
        if self._pending is not None:
            kind, message = self._pending
            if kind in {"RateLimitError", "RouterRateLimitError"}:
                fix = "wait for the rate limit or quota to reset, or use another key or model"
            else:
                fix = "check the model endpoint's status; run the task again once it answers"
            self._fail(f"the model API kept failing and aider gave up: {message}", fix)
        elif exit_code not in (0, None) and self._crash is not None:
            fix = "see the traceback in the run log"
            if "Read-only file system" in self._crash and ".git/config" in self._crash:
                fix = (
                    "aider found no git identity and tried to write one into the read-only "
                    ".git/config: give the sandbox a git user.name and user.email"
                )
            self._fail(f"aider crashed: {self._crash}", fix)
        elif exit_code == 0 and self._replies == 0:
            self._fail(
                "aider ended without an answer from the model",
                "see the run log for what aider printed; check `model` and `endpoint`",
            )

    # -- one kind of line each -----------------------------------------------------

    def _fail(self, reason: str, fix: str) -> None:
        if self.failure is None:  # the first failure is the cause; later ones follow from it
            self.failure = AgentFailure(reason=reason, fix=fix)

    def _usage(self, line: str) -> bool:
        tokens = _TOKENS.match(line)
        if tokens:
            self._replies += 1
            self.usage.turns += 1
            self.usage.tokens_in += parse_count(tokens.group("sent"))
            self.usage.tokens_out += parse_count(tokens.group("received"))
            if tokens.group("cost"):
                self._cost(tokens.group("cost"))
            return True
        if line.startswith("Cost: "):  # on a line of its own after cache hits and writes
            self._cost(line)
            return True
        model = _MODEL.match(line)
        if model:
            self.usage.model = model.group("model")
            return True
        return False

    def _cost(self, text: str) -> None:
        cost = _COST.match(text)
        if cost:  # the session total so far: the last one printed is the run's cost
            self.usage.cost_usd = float(cost.group("session"))

    def _api_error(self, kind: str, message: str) -> bool:
        if _NO_NETWORK.search(message) or kind == "APIConnectionError":
            self._fail(f"the agent has no network: {message}", NETWORK_FIX)
            return False
        if kind == "AuthenticationError":
            self._fail(f"401 from the model: {message}", CREDENTIAL_FIX)
            return False
        if kind == "NotFoundError":
            self._fail(
                f"the model was not found: {message}",
                "set `model` in the agent's [agents.NAME] table to a model its endpoint serves",
            )
            return False
        if kind in _RETRIED:
            self._pending = (kind, message)
            return False
        self._fail(
            f"the model API refused the request ({kind}): {message}",
            "see the run log; check `model` and `endpoint` in the agent's table",
        )
        return False

    def _edits(self, line: str) -> None:
        if line == "The LLM did not conform to the edit format.":
            self._refused = "the model's reply did not follow aider's edit format"
        elif line == "Exception while updating files:":
            self._refused = "aider could not write the edited files"
        elif self._refused and line.startswith("## "):
            self._refused = line.removeprefix("## ")  # e.g. "SearchReplaceNoExactMatch: ..."
        elif line.startswith("Applied edit to "):
            self._refused = None
        elif _REFLECTIONS.match(line) and self._refused:
            self._fail(
                f"aider could not apply the model's edits: {self._refused}",
                "the model does not follow aider's edit format: use a stronger model, or add "
                "--edit-format whole to the agent's command",
            )
        elif line.startswith("Cmd('git') failed"):
            self._git_failed = True
        elif self._git_failed and line.startswith("stderr: "):
            detail = line.removeprefix("stderr: ").strip("'")
            self._fail(
                f"a git command of aider failed, so its edit was not applied: {detail}",
                "keep the preset's GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY and "
                "GIT_ALTERNATE_OBJECT_DIRECTORIES (the sandbox's .git is read-only)",
            )
        elif line.startswith("Model ") and line.endswith("has hit a token limit!"):
            self._fail(
                line,
                "give the task a smaller scope, or use a model with a larger context window",
            )

    def _crashes(self, line: str) -> None:
        crash = _CRASH.match(line)
        if crash:
            self._crash = crash.group("kind")
            return
        end = _TRACEBACK_END.match(line)
        if self._crash is not None and end and end.group("kind").endswith(self._crash):
            self._crash = f"{end.group('kind')}: {end.group('message')}"

    def _keys(self, line: str) -> None:
        if line.startswith("Warning: ") and line.endswith("expects these environment variables"):
            self._expects_keys = True
            return
        missing = _MISSING_KEY.match(line)
        if self._expects_keys and missing:
            key = missing.group("key")
            self._fail(
                f"aider has no {key} (the model's credential)",
                f"store it: capataz secret set {key}, and list it in the agent's `secrets`",
            )
