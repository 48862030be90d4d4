"""A fake Anthropic Messages API that Claude Code (the real CLI) can work against.

It speaks the streaming protocol the real client expects: ``message_start``,
``content_block_start`` / ``content_block_delta`` (``text_delta`` and the tool call's
``input_json_delta``) / ``content_block_stop``, ``message_delta`` carrying the stop
reason and the output usage, ``message_stop``. It also answers what the CLI may call
besides (``count_tokens``, the model list) and a non-streaming request.

Scenarios:

* ``edit``: the conversation that offers tools gets one ``Write`` tool call per
  entry of :attr:`FakeModelServer.edits` (each path made absolute with the working directory the
  CLI states in its prompt), then, once the tool result comes back, a final text turn.
  Side requests without tools (titles, summaries) get a short text.
* ``unauthorized``: every Messages request is a 401 ``authentication_error``.
* ``rate_limited_then_edit``: the first Messages request is a 429 ``rate_limit_error``
  with ``retry-after: 0``, then as ``edit``.
* ``hang``: Messages requests are accepted and never answered.
* ``edit_then_hang``: as ``edit`` until the tool result comes back; that request is
  accepted and never answered (a run that can only end by being stopped, after it
  used tokens and changed a file: what a budget stops).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from tests.agents.fake_models.server import Counter, FakeModelServer, Recorded, Reply

__all__ = ["MODEL", "FakeAnthropic"]

MODEL = "claude-fake-1"
TOKENS_IN = 1200  # reported per request: a test can add them up
TOKENS_OUT = 40
_WORKDIR = re.compile(r"[Ww]orking directory: (/[^\s<]+)")


def _error(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def _text_of(value: Any) -> str:
    """All the text in a system prompt or message content, whatever its shape."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        return "\n".join(_text_of(value.get(key)) for key in ("text", "content") if key in value)
    return ""


class FakeAnthropic(FakeModelServer):
    """See the module docstring."""

    def __init__(self, scenario: str = "edit", **kwargs: Any) -> None:
        super().__init__(scenario, **kwargs)
        self._limited = Counter()

    def messages(self) -> list[Recorded]:
        """The Messages requests received (the conversation and any side requests)."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]

    def respond(self, request: Recorded, reply: Reply) -> None:
        path = request.path.split("?")[0]
        if path == "/v1/messages" and request.method == "POST":
            self._messages(request, reply)
        elif path == "/v1/messages/count_tokens":
            reply.json(200, {"input_tokens": TOKENS_IN})
        elif path.startswith("/v1/models"):
            model = {
                "type": "model",
                "id": MODEL,
                "display_name": "Fake",
                "created_at": "2026-01-01T00:00:00Z",
            }
            reply.json(
                200, {"data": [model], "has_more": False, "first_id": MODEL, "last_id": MODEL}
            )
        else:
            reply.json(404, _error("not_found_error", f"no {request.method} {path} here"))

    def _messages(self, request: Recorded, reply: Reply) -> None:
        if self.scenario == "unauthorized":
            reply.json(401, _error("authentication_error", "invalid x-api-key"))
            return
        if self.scenario == "hang":
            reply.hang()
            return
        if self.scenario == "rate_limited_then_edit" and self._limited.take() == 0:
            reply.json(
                429,
                _error("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
                headers={"retry-after": "0"},
            )
            return
        body = request.json_body()
        if self.scenario == "edit_then_hang" and _answered(body):
            reply.hang()
            return
        blocks = self._answer(body)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        model = str(body.get("model") or MODEL)
        if body.get("stream"):
            reply.sse(_stream(model, blocks, stop))
        else:
            reply.json(200, _message(model, blocks, stop, TOKENS_OUT))

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The content blocks of the next assistant turn."""
        tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        messages = body.get("messages") or []
        answered = _answered(body)
        names = ", ".join(edit.path for edit in self.edits)
        if "Write" not in tools or answered:
            return [{"type": "text", "text": f"Done: wrote {names}."}]
        where = _WORKDIR.search(_text_of(body.get("system")) + "\n" + _text_of(messages))
        root = where.group(1).rstrip("/.") + "/" if where else ""
        return [
            {"type": "text", "text": f"I will write {names}."},
            *(
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": "Write",
                    "input": {"file_path": root + edit.path, "content": edit.content},
                }
                for edit in self.edits
            ),
        ]


def _answered(body: dict[str, Any]) -> bool:
    """Whether the request carries a tool's result (the turn after a tool call)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _message(model: str, blocks: list[dict[str, Any]], stop: str, out: int) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": TOKENS_IN,
            "output_tokens": out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stream(model: str, blocks: list[dict[str, Any]], stop: str) -> list[tuple[str | None, Any]]:
    """The event stream of one assistant turn, as the real API sends it."""
    start = _message(model, [], None, 1)  # type: ignore[arg-type]
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": TOKENS_OUT},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events
