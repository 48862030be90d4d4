"""One call to an OpenAI-compatible Chat Completions endpoint, through the official
``openai`` SDK, asking for the directives as JSON-schema structured output.

The SDK's own retries are off (``max_retries=0``): a 429 is retried here with the one
backoff of capataz (:mod:`capataz.retry`), at most ``[planner] max_retries`` times, so
the planner waits like every other part of capataz and says so when it gives up. Every
other failure is turned into a planner error at once, with its fix; messages from the
API are masked (:mod:`capataz.redaction`) before they go anywhere, since an API may
echo the key it refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from capataz.config import PlannerConfig
from capataz.planner.errors import (
    PlannerAnswerError,
    PlannerRateLimited,
    PlannerTimeout,
    PlannerUnauthorized,
    PlannerUnreachable,
    PlannerUpstreamError,
)
from capataz.redaction import redact
from capataz.retry import Backoff, retry

__all__ = ["ANSWER_SCHEMA", "BACKOFF", "Answer", "ask"]

# 429s: 0.5 s doubling to 8 s, full jitter (the schedule of capataz.retry).
BACKOFF = Backoff(base=0.5, cap=8.0)

_TASK: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "title", "instruction", "agent", "depends_on", "labels", "priority"],
    "properties": {
        "name": {"type": "string", "description": "unique within the directive"},
        "title": {"type": "string"},
        "instruction": {"type": "string"},
        "agent": {"type": ["string", "null"]},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "array", "items": {"type": "string"}},
        "priority": {"type": ["integer", "null"]},
    },
}
# Strict structured output wants every property required; the optional ones are
# nullable instead (agent, priority) or may be empty (labels, depends_on).
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["directives"],
    "properties": {
        "directives": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["title", "rationale", "tasks"],
                "properties": {
                    "title": {"type": "string"},
                    "rationale": {"type": "string"},
                    "tasks": {"type": "array", "items": _TASK},
                },
            },
        }
    },
}
RESPONSE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "capataz_directives", "strict": True, "schema": ANSWER_SCHEMA},
}


@dataclass(frozen=True)
class Answer:
    """What the model said (the message's text), which model said it, and its usage."""

    text: str
    model: str
    usage: dict[str, Any] = field(default_factory=dict)


def ask(
    planner: PlannerConfig,
    api_key: str,
    messages: list[dict[str, str]],
    *,
    sleep: Callable[[float], object] = time.sleep,
) -> Answer:
    """The model's answer to ``messages``; a :class:`PlannerError
    <capataz.planner.errors.PlannerError>` subclass for every way it can fail."""
    chat: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": m["content"]}
        if m["role"] == "system"
        else {"role": "user", "content": m["content"]}
        for m in messages
    ]
    retried = 0

    def count(error: BaseException, delay: float) -> None:
        nonlocal retried
        retried += 1
        if retried > planner.max_retries:
            raise error

    with openai.OpenAI(
        base_url=planner.endpoint,
        api_key=api_key,
        timeout=planner.timeout,
        max_retries=0,
    ) as client:

        def once() -> Any:
            return _call(client, planner, chat)

        try:
            completion = retry(
                once,
                transient=(PlannerRateLimited,),
                backoff=BACKOFF,
                give_up=None,
                on_retry=count,
                sleep=sleep,
            )
        except PlannerRateLimited as exc:
            raise PlannerRateLimited(
                f"{exc.message} (after {planner.max_retries} retries)", fix=exc.fix
            ) from None
    choices = completion.choices or []
    text = choices[0].message.content if choices else None
    if not text:
        refusal = getattr(choices[0].message, "refusal", None) if choices else None
        raise PlannerAnswerError(
            "the planner's model answered with no text"
            + (f" (it refused: {redact(str(refusal))})" if refusal else ""),
            fix="check [planner] model supports structured output, then run again",
        )
    usage = completion.usage.model_dump(exclude_none=True) if completion.usage else {}
    return Answer(text=text, model=str(completion.model or planner.model), usage=usage)


def _call(
    client: openai.OpenAI, planner: PlannerConfig, chat: list[ChatCompletionMessageParam]
) -> Any:
    where = planner.endpoint
    try:
        return client.chat.completions.create(
            model=planner.model, messages=chat, response_format=RESPONSE_FORMAT
        )
    except openai.RateLimitError as exc:
        raise PlannerRateLimited(
            f"the planner's model API at {where} is rate limiting (429): {_said(exc)}",
            fix="wait and run again, or raise the account's limits",
        ) from None
    except openai.AuthenticationError as exc:
        raise PlannerUnauthorized(
            f"the planner's model API at {where} refused the key ({exc.status_code}): {_said(exc)}",
            fix=f"store a valid key with `capataz secret set {planner.credential}`",
        ) from None
    except openai.PermissionDeniedError as exc:
        raise PlannerUnauthorized(
            f"the planner's model API at {where} refused the key ({exc.status_code}): {_said(exc)}",
            fix=f"give the key of {planner.credential} access to model {planner.model}",
        ) from None
    except openai.APITimeoutError:
        raise PlannerTimeout(
            f"the planner's model API at {where} did not answer within {planner.timeout:g} s",
            fix="run again later, or raise [planner] timeout",
        ) from None
    except openai.APIConnectionError as exc:
        raise PlannerUnreachable(
            f"the planner's model API at {where} cannot be reached ({type(exc).__name__})",
            fix="check [planner] endpoint and the network",
        ) from None
    except openai.APIStatusError as exc:
        raise PlannerUpstreamError(
            f"the planner's model API at {where} answered {exc.status_code}: {_said(exc)}",
            fix="check [planner] endpoint and model, then run again",
        ) from None


def _said(exc: openai.APIStatusError) -> str:
    """The API's own message, masked, on one line."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or exc.message or type(exc).__name__)
    return redact(" ".join(text.split()))[:300]
