"""A local stand-in for the OpenAI Responses API, spoken the way Codex CLI reads it.

The Codex preset tests run the real ``codex exec`` against this server over real HTTP on
loopback, so what it sends must be exactly what Codex's client parses
(codex-rs/codex-api/src/sse/responses.rs): Server-Sent Events whose ``data`` is a JSON
object with a ``type`` (``response.created``, ``response.output_item.added`` /
``.done``, ``response.output_text.delta``, ``response.completed`` with ``usage``), and
error bodies shaped like OpenAI's (``{"error": {"message", "type", "code"}}``).

The model's "edit" uses whichever edit tool Codex offered in the request: the freeform
``apply_patch`` custom tool (gpt-5.x models), a JSON ``apply_patch`` function, or, when
neither is offered, the ``exec_command`` / ``shell`` function with a shell command. So
the edit goes through Codex's own tool machinery, as it would with a real model.

Scenarios (``FakeResponses(scenario=...)``):

- ``edit``: a tool call that writes ``path`` (with ``content``), then a final message;
- ``unauthorized``: 401 with OpenAI's ``invalid_api_key`` error body on every call;
- ``rate_limited_then_edit``: 429 ``rate_limit_exceeded`` once, then ``edit``;
- ``hang``: accepts the request and never answers (until the server stops);
- ``disconnect``: starts the event stream, then drops the connection before
  ``response.completed`` (what a flaky proxy or network does).

This module is self-contained (stdlib only) so that it does not wait for the shared
fake-server base of the other presets; it can be folded onto that base later.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

__all__ = ["FakeResponses", "Recorded", "Scenario", "unauthorized"]

Scenario = Literal["edit", "unauthorized", "rate_limited_then_edit", "hang", "disconnect"]

# Usage reported for every response (the tests read it back from Codex's turn.completed).
INPUT_TOKENS = 1200
CACHED_TOKENS = 200
OUTPUT_TOKENS = 34
FINAL_TEXT = "Done: the file is written."


def unauthorized(key: str) -> dict[str, Any]:
    """OpenAI's 401 body: it names the key it refused, masked (never in full)."""
    masked = key[:3] + "*" * max(len(key) - 7, 4) + key[-4:]
    message = (
        f"Incorrect API key provided: {masked}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return _error(message, "invalid_request_error", "invalid_api_key")


RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for gpt-5.5 on tokens per min (TPM): Limit 30000, "
        "Used 30000, Requested 1200. Please try again in 50ms.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON


@dataclass
class _State:
    scenario: Scenario
    path: str
    content: str
    requests: list[Recorded] = field(default_factory=list)
    rate_limited: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeResponses:
    """The server: ``with FakeResponses("edit", path="hello.txt") as fake:`` then point
    Codex at ``fake.base_url``; ``fake.requests`` is what it received, in order."""

    def __init__(
        self,
        scenario: Scenario = "edit",
        *,
        path: str = "hello.txt",
        content: str = "hello from codex\n",
    ) -> None:
        self._state = _State(scenario=scenario, path=path, content=content)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.state = self._state  # type: ignore[attr-defined]
        # a short poll interval: shutdown() waits for the next poll
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """What Codex's ``model_providers.<id>.base_url`` is set to (``…/v1``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    def model_calls(self) -> list[Recorded]:
        """The ``POST …/responses`` requests (the model turns), in order."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/responses")]

    def __enter__(self) -> FakeResponses:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state.stop.set()  # releases the "hang" handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    @property
    def state(self) -> _State:
        state: _State = self.server.state  # type: ignore[attr-defined]
        return state

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the tests read .requests instead

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.state.lock:
            self.state.requests.append(Recorded(self.command, self.path, headers, body))

    def _send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record(None)
        if self.path.split("?")[0].rstrip("/").endswith("/models"):
            # OpenAI's list shape; Codex 0.169 did not ask for it against a custom
            # provider, but a client that does gets a sensible answer.
            model = {"id": "gpt-5.5", "object": "model", "created": 0, "owned_by": "fake"}
            self._send_json(200, {"object": "list", "data": [model]})
            return
        self._send_json(404, _error(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self._record(body)
        if not self.path.split("?")[0].endswith("/responses"):
            self._send_json(404, _error(f"no route {self.path}", "invalid_request_error"))
            return
        state = self.state
        if state.scenario == "unauthorized":
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._send_json(401, unauthorized(key))
            return
        if state.scenario == "hang":
            state.stop.wait()
            self.close_connection = True
            return
        request = body if isinstance(body, dict) else {}
        if state.scenario == "disconnect":
            model = str(request.get("model") or "gpt-5.5")
            created = _response_events("resp_cut", model, _final_message(0))
            self._stream(created[:1])  # response.created, then the connection closes
            return
        if state.scenario == "rate_limited_then_edit":
            with state.lock:
                first, state.rate_limited = not state.rate_limited, True
            if first:
                self._send_json(429, RATE_LIMITED, {"Retry-After": "0"})
                return
        self._stream(_edit_turn(request, state))

    def _stream(self, events: list[dict[str, Any]]) -> None:
        """Send ``events`` as one SSE body; the connection closes at its end (no length),
        as a streamed response may."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for number, event in enumerate(events):
            event["sequence_number"] = number
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _edit_turn(request: dict[str, Any], state: _State) -> list[dict[str, Any]]:
    """The model's answer to one turn: the edit while no tool result has come back, the
    final message once it has (so a retried request gets the same answer)."""
    with state.lock:
        number = next(state.ids)
    model = str(request.get("model") or "gpt-5.5")
    inputs = request.get("input") or []
    answered = any(
        isinstance(item, dict)
        and item.get("type") in ("custom_tool_call_output", "function_call_output")
        for item in inputs
    )
    item = _final_message(number) if answered else _tool_call(request, state, number)
    return _response_events(f"resp_{number}", model, item)


def _tools(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            found[tool["name"]] = tool
    return found


def _tool_call(request: dict[str, Any], state: _State, number: int) -> dict[str, Any]:
    tools = _tools(request)
    call_id = f"call_{number}"
    patch = "".join(
        [f"*** Begin Patch\n*** Add File: {state.path}\n"]
        + [f"+{line}\n" for line in state.content.splitlines()]
        + ["*** End Patch\n"]
    )
    apply_patch = tools.get("apply_patch")
    if apply_patch is not None and apply_patch.get("type") == "custom":
        return {
            "type": "custom_tool_call",
            "id": f"ctc_{number}",
            "status": "completed",
            "call_id": call_id,
            "name": "apply_patch",
            "input": patch,
        }
    if apply_patch is not None:
        arguments = json.dumps({"input": patch})
        return _function_call(number, call_id, "apply_patch", arguments)
    # No edit tool offered (a model Codex has no metadata for): write the file with the
    # shell tool, quoting the content for sh.
    quoted = "'" + state.content.replace("'", "'\\''") + "'"
    command = f"printf %s {quoted} > {state.path}"
    if "exec_command" in tools:
        return _function_call(number, call_id, "exec_command", json.dumps({"cmd": command}))
    shell = {"command": ["bash", "-lc", command]}
    return _function_call(number, call_id, "shell", json.dumps(shell))


def _function_call(number: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{number}",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _final_message(number: int) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{number}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": FINAL_TEXT, "annotations": []}],
    }


def _response_events(response_id: str, model: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events of one response holding one output item, in the API's order."""
    created = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
    }
    pending = {**item, "status": "in_progress"}
    if item["type"] == "message":
        pending["content"] = []
    elif item["type"] == "custom_tool_call":
        pending["input"] = ""
    elif item["type"] == "function_call":
        pending["arguments"] = ""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": created},
        {"type": "response.in_progress", "response": created},
        {"type": "response.output_item.added", "output_index": 0, "item": pending},
    ]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        base = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events.append({"type": "response.content_part.added", **base, "part": part})
        for start in range(0, len(text), 8):
            delta = text[start : start + 8]
            events.append({"type": "response.output_text.delta", **base, "delta": delta})
        events.append({"type": "response.output_text.done", **base, "text": text})
        events.append(
            {"type": "response.content_part.done", **base, "part": {**part, "text": text}}
        )
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    usage = {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    done = {**created, "status": "completed", "output": [item], "usage": usage}
    events.append({"type": "response.completed", "response": done})
    return events
