"""``GET /events``: the live event stream as Server-Sent Events.

Each frame is ``id: N``, ``event: <type>`` and ``data: <the event's JSON>`` (see
:mod:`capataz.events`). The stream starts after ``Last-Event-ID`` (what browsers and
SSE clients send when they reconnect) or the ``after`` parameter; without either it
starts with the next event. Streams do not read the database themselves: the server's
one :class:`~capataz.api.event_hub.EventHub` reads the events table (woken by NOTIFY
on PostgreSQL, every 0.1 s on SQLite) and fans new events out to every stream, which
filters them in memory. Reading the table makes it work whichever process (server,
database runner) wrote the event; one reader makes 50 clients cost what one does. A
stream resuming from an older id reads that backlog itself, once, then joins the hub;
a client too slow to keep up is disconnected (it resumes with Last-Event-ID). A
comment goes out every 15 seconds so proxies keep the connection open. The token is
checked again every 30 seconds: revoking it ends the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from capataz.api.auth import Access, requires
from capataz.api.deps import store_of
from capataz.api.errors import ApiError
from capataz.api.event_hub import EventHub
from capataz.events import EventRecord, EventType
from capataz.store import Store, TokenInfo

__all__ = ["router"]

router = APIRouter(tags=["events"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]

WAIT_SECONDS = 1.0  # how often an idle stream looks at its client, clock and token
KEEPALIVE_SECONDS = 15.0
RECHECK_TOKEN_SECONDS = 30.0
_TYPES = {kind.value for kind in EventType}


def _wanted_types(types: str | None) -> frozenset[str] | None:
    if not types:
        return None
    chosen = frozenset(t.strip() for t in types.split(",") if t.strip())
    unknown = sorted(chosen - _TYPES)
    if unknown:
        raise ApiError(
            422,
            f"types: unknown event type {unknown[0]!r}; use some of {', '.join(sorted(_TYPES))}",
        )
    return chosen or None


def _start_after(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise ApiError(422, "Last-Event-ID: not an event id (a whole number)") from None
        if value < 0:
            raise ApiError(422, "Last-Event-ID: event ids are 0 or more")
        return value
    return after


def frame(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


@router.get(
    "/events",
    summary="Live events as Server-Sent Events (text/event-stream), resumable",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The stream"}},
)
async def events(  # noqa: PLR0917 - FastAPI reads each parameter as a query or header
    request: Request,
    _: Reader,
    task_id: Annotated[str | None, Query(max_length=200)] = None,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    types: Annotated[
        str | None, Query(max_length=1000, description="Comma-separated event types")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Start after this event id (0: all kept)")
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    store = store_of(request)
    wanted = _wanted_types(types)
    start = _start_after(last_event_id, after)
    if start is None:
        start = await run_in_threadpool(store.events.last_id)
    stream = _stream(request, store, start, task_id=task_id, run_id=run_id, types=wanted)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _stream(
    request: Request,
    store: Store,
    after: int,
    *,
    task_id: str | None,
    run_id: str | None,
    types: frozenset[str] | None,
) -> AsyncIterator[str]:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    hub: EventHub = request.app.state.event_hub
    yield f"retry: 2000\n: capataz events after {after}\n\n"
    sent = after
    backlog: list[str] = []

    def wanted(record: EventRecord) -> bool:
        return (
            record.id > sent
            and (task_id is None or record.task_id == task_id)
            and (run_id is None or record.run_id == run_id)
            and (types is None or record.type in types)
        )

    async def read(position: int) -> list[EventRecord]:
        return await run_in_threadpool(
            store.events.after, position, task_id=task_id, run_id=run_id, types=types
        )

    async def send(page: list[EventRecord]) -> None:
        nonlocal sent
        for record in page:
            if wanted(record):
                sent = record.id
                backlog.append(frame(record.as_json()))

    # The backlog (events before the hub's cursor) is read by this stream alone, once.
    subscription = await hub.join(after, read, send)
    try:
        for chunk in backlog:
            yield chunk
        backlog.clear()
        last_sent = checked = time.monotonic()
        while not subscription.overflowed:
            if await request.is_disconnected():
                return
            with contextlib.suppress(TimeoutError):
                batch = await asyncio.wait_for(subscription.queue.get(), WAIT_SECONDS)
                chosen = [record for record in batch if wanted(record)]
                for record in chosen:
                    sent = record.id
                    yield frame(record.as_json())
                if chosen:
                    last_sent = time.monotonic()
                continue
            now = time.monotonic()
            if now - last_sent > KEEPALIVE_SECONDS:
                last_sent = now
                yield ": keep-alive\n\n"
            if now - checked > RECHECK_TOKEN_SECONDS:
                checked = now
                if await run_in_threadpool(store.tokens.authenticate, token) is None:
                    yield ": token revoked; closing\n\n"
                    return
        yield ": too far behind; reconnect with Last-Event-ID\n\n"
    finally:
        hub.leave(subscription)
