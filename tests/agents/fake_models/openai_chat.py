"""A fake OpenAI Chat Completions server for driving real agent CLIs (aider) in tests.

Real HTTP on loopback, so the agent's own client stack (litellm → openai → httpx) runs
unmodified: what the tests check is what a user would see against the real API. The
server answers ``POST /v1/chat/completions`` (and ``/chat/completions``) according to a
scenario:

* ``"edit"``: a reply that creates or rewrites the file the test names, in the edit
  format the agent asked for (aider's *whole file* listing, or a SEARCH/REPLACE block
  when the system prompt asks for those), with usage;
* ``"unauthorized"``: 401 with OpenAI's error body (``invalid_api_key``);
* ``"model_not_found"``: 404 with OpenAI's ``model_not_found`` body;
* ``"rate_limited_then_edit"``: 429 (``rate_limit_exceeded``, ``retry-after: 0``) for
  the first request, then the edit; ``"rate_limited"``: 429 for every request;
* ``"refused_edit"``: a SEARCH/REPLACE block whose SEARCH text matches nothing, so the
  agent cannot apply it;
* ``"hang"``: accepts the request and never answers (until the server stops).

With ``answer`` set, every successful reply's message is exactly that text (the
planner's tests: a JSON plan, or something that is not JSON), whatever the scenario.

Streaming (``"stream": true``) is answered as server-sent events, one chunk per line of
the reply, a final chunk with ``finish_reason``, a usage chunk when the client asked
for one (``stream_options.include_usage``) and ``data: [DONE]``. Every request is
recorded (:attr:`FakeOpenAIChat.requests`) for the tests to assert on.

Folded into the shared fake-server base (tests/agents/fake_models/) once it lands."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["FakeOpenAIChat", "Recorded", "Scenario"]

Scenario = Literal[
    "edit",
    "unauthorized",
    "model_not_found",
    "rate_limited",
    "rate_limited_then_edit",
    "refused_edit",
    "hang",
]

PROMPT_TOKENS = 1234  # what every successful reply reports as usage
COMPLETION_TOKENS = 56


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def system_prompt(self) -> str:
        messages = self.body.get("messages") or []
        return "\n".join(
            str(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "system"
        )


@dataclass
class FakeOpenAIChat:
    """The server's behaviour; use as a context manager, which yields the base URL
    (``http://127.0.0.1:PORT/v1``) and stops the server (and any hanging request) on exit."""

    scenario: Scenario = "edit"
    path: str = "hello.txt"  # the file the edit creates or rewrites
    content: str = "hello from the fake model\n"  # its whole new content
    answer: str | None = None  # the reply's text verbatim instead of an edit
    requests: list[Recorded] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> str:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def completions(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- what to answer -------------------------------------------------------------

    def _record(self, recorded: Recorded) -> int:
        with self._lock:
            self.requests.append(recorded)
            return sum(r.path.endswith("/chat/completions") for r in self.requests)

    def reply_text(self, request: Recorded) -> str:
        """The assistant's message for an edit, in the format the agent's prompt asks
        for: SEARCH/REPLACE blocks (aider's ``diff``) or whole-file listings; or
        ``answer`` verbatim when it is set."""
        if self.answer is not None:
            return self.answer
        if self.scenario == "refused_edit":
            return _search_replace(self.path, "text that is in no file at all\n", self.content)
        if "SEARCH/REPLACE" in request.system_prompt:
            return _search_replace(self.path, "", self.content)
        return f"I will write {self.path}.\n\n{self.path}\n```\n{self.content}```\n"


def _search_replace(path: str, search: str, replace: str) -> str:
    return (
        f"I will change {path}.\n\n{path}\n```\n<<<<<<< SEARCH\n{search}=======\n"
        f"{replace}>>>>>>> REPLACE\n```\n"
    )


def _error(message: str, kind: str, code: str) -> dict[str, Any]:
    """OpenAI's error body, as api.openai.com sends it."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler_for(fake: FakeOpenAIChat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the tests assert on fake.requests instead

        def handle(self) -> None:
            with suppress(ConnectionError):  # a client that gave up (killed, timed out)
                super().handle()

        def do_GET(self) -> None:
            fake._record(Recorded(self.path, dict(self.headers), {}))
            self._json(404, _error(f"no route {self.path}", "invalid_request_error", "not_found"))

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"unparsed": raw.decode("utf-8", "replace")}
            recorded = Recorded(self.path, dict(self.headers), body)
            number = fake._record(recorded)
            if not self.path.endswith("/chat/completions"):
                self._json(
                    404, _error(f"no route {self.path}", "invalid_request_error", "not_found")
                )
                return
            self._answer(fake.scenario, number, recorded)

        def _answer(self, scenario: Scenario, number: int, request: Recorded) -> None:
            model = str(request.body.get("model", "fake-model"))
            if scenario == "hang":
                fake._stop.wait()
                self.close_connection = True
                return
            if scenario == "unauthorized":
                key = request.headers.get("Authorization", "").removeprefix("Bearer ")
                shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
                message = (
                    f"Incorrect API key provided: {shown}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys."
                )
                self._json(401, _error(message, "invalid_request_error", "invalid_api_key"))
                return
            if scenario == "model_not_found":
                message = f"The model `{model}` does not exist or you do not have access to it."
                self._json(404, _error(message, "invalid_request_error", "model_not_found"))
                return
            if scenario == "rate_limited" or (scenario == "rate_limited_then_edit" and number == 1):
                message = (
                    f"Rate limit reached for {model} on tokens per min (TPM): Limit 30000, "
                    "Used 30000, Requested 1234. Please try again in 20ms."
                )
                self._json(
                    429,
                    _error(message, "tokens", "rate_limit_exceeded"),
                    headers={"retry-after": "0", "retry-after-ms": "20"},
                )
                return
            text = fake.reply_text(request)
            if request.body.get("stream"):
                self._stream(model, text, request.body)
            else:
                self._json(200, _completion(model, text))

        def _json(
            self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, model: str, text: str, body: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            for chunk in _chunks(model, text, body):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _base(model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        **_base(model),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }


def _chunks(model: str, text: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base = {**_base(model), "object": "chat.completion.chunk"}
    first = True
    for line in text.splitlines(keepends=True):
        delta: dict[str, Any] = {"content": line}
        if first:
            delta["role"] = "assistant"
            first = False
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        yield {**base, "choices": [], "usage": _usage()}
