"""The fake Responses server on its own, over real HTTP: the wire format the Codex tests
rely on (what Codex's client parses) without needing the CLI to tell it is broken."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.agents.fake_models.openai_responses import FakeResponses

EDIT_TOOLS = [
    {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    {"type": "function", "name": "exec_command", "parameters": {}},
]


def post(url: str, body: dict[str, Any], key: str = "sk-fake-123456") -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        data = json.loads(fields["data"])
        assert fields["event"] == data["type"]
        events.append(data)
    return events


def test_edit_is_a_patch_then_a_final_message_with_usage() -> None:
    with FakeResponses("edit", path="notes/a.txt", content="one\ntwo\n") as fake:
        status, text = post(f"{fake.base_url}/responses", {"model": "m", "tools": EDIT_TOOLS})
        assert status == 200
        events = sse_events(text)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        (done,) = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert done["type"] == "custom_tool_call" and done["name"] == "apply_patch"
        assert done["input"] == (
            "*** Begin Patch\n*** Add File: notes/a.txt\n+one\n+two\n*** End Patch\n"
        )
        usage = events[-1]["response"]["usage"]
        assert usage["input_tokens_details"]["cached_tokens"] <= usage["input_tokens"]

        answered = {"model": "m", "input": [{"type": "custom_tool_call_output", "output": "ok"}]}
        status, text = post(f"{fake.base_url}/responses", answered)
        events = sse_events(text)
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        (message,) = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert message["type"] == "message" and message["content"][0]["text"] == deltas
        assert len(fake.model_calls()) == 2


def test_without_an_edit_tool_the_model_uses_the_shell_tool() -> None:
    with FakeResponses("edit", content="it's\n") as fake:
        _, text = post(f"{fake.base_url}/responses", {"tools": EDIT_TOOLS[1:]})
        (done,) = [e["item"] for e in sse_events(text) if e["type"] == "response.output_item.done"]
        assert done["type"] == "function_call" and done["name"] == "exec_command"
        assert json.loads(done["arguments"])["cmd"] == "printf %s 'it'\\''s\n' > hello.txt"


def test_401_names_the_key_masked_like_openai() -> None:
    with FakeResponses("unauthorized") as fake:
        status, text = post(f"{fake.base_url}/responses", {}, key="sk-fake-123456")
        assert status == 401
        error = json.loads(text)["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert "sk-*******3456" in error["message"] and "sk-fake-123456" not in error["message"]


def test_429_once_then_the_edit() -> None:
    with FakeResponses("rate_limited_then_edit") as fake:
        status, text = post(f"{fake.base_url}/responses", {"tools": EDIT_TOOLS})
        assert status == 429 and json.loads(text)["error"]["code"] == "rate_limit_exceeded"
        status, _ = post(f"{fake.base_url}/responses", {"tools": EDIT_TOOLS})
        assert status == 200


def test_disconnect_ends_the_stream_before_completion() -> None:
    with FakeResponses("disconnect") as fake:
        _, text = post(f"{fake.base_url}/responses", {})
        assert [e["type"] for e in sse_events(text)] == ["response.created"]


def test_other_routes() -> None:
    with FakeResponses() as fake:
        with urllib.request.urlopen(f"{fake.base_url}/models", timeout=30) as response:
            assert json.loads(response.read())["data"][0]["id"]
        status, text = post(f"{fake.base_url}/chat/completions", {})
        assert status == 404 and "error" in json.loads(text)
        assert [r.path for r in fake.requests] == ["/v1/models", "/v1/chat/completions"]
