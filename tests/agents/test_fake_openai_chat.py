"""The fake OpenAI Chat Completions server speaks the wire format real clients parse."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from tests.agents.fake_models.openai_chat import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAIChat


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


BODY = {"model": "m", "messages": [{"role": "system", "content": "plain"}]}


def test_a_plain_completion_carries_the_whole_file_listing_and_usage() -> None:
    fake = FakeOpenAIChat(path="a.txt", content="A\n")
    with fake as url:
        status, _, raw = post(url, BODY)
    assert status == 200
    data = json.loads(raw)
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"].endswith("a.txt\n```\nA\n```\n")
    assert data["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert fake.completions[0].headers["Authorization"] == "Bearer sk-test"


def test_a_stream_is_server_sent_chunks_with_usage_when_asked() -> None:
    prompt = "reply with SEARCH/REPLACE blocks"
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": prompt}],
    }
    with FakeOpenAIChat(path="a.txt", content="A\n") as url:
        status, headers, raw = post(url, body)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = [line.removeprefix("data: ") for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "<<<<<<< SEARCH\n=======\nA\n>>>>>>> REPLACE" in text  # the diff format asked for
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == COMPLETION_TOKENS


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [("unauthorized", 401, "invalid_api_key"), ("model_not_found", 404, "model_not_found")],
)
def test_errors_have_openais_body(scenario: Any, status: int, code: str) -> None:
    with FakeOpenAIChat(scenario=scenario) as url:
        got, _, raw = post(url, BODY)
    assert got == status
    assert json.loads(raw)["error"]["code"] == code


def test_rate_limited_once_then_the_answer() -> None:
    fake = FakeOpenAIChat(scenario="rate_limited_then_edit")
    with fake as url:
        first, headers, _ = post(url, BODY)
        second, _, _ = post(url, BODY)
    assert (first, second) == (429, 200)
    assert headers["retry-after"] == "0"
    assert len(fake.completions) == 2
