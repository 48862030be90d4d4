"""The app factory: one FastAPI app over one Store, so tests, ``capataz serve`` and
anything embedding the API build it the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from capataz.api.auth import RateLimiter, TokenCache
from capataz.api.deps import capataz_version
from capataz.api.errors import install_handlers
from capataz.api.event_hub import EventHub
from capataz.api.fleet import ReadyHub, ServerSweeper, running
from capataz.api.mcp import McpDoor
from capataz.api.routes import (
    escalations,
    events,
    health,
    metrics,
    ops,
    planner,
    runner_context,
    runs,
    tasks,
)
from capataz.api.routes import panel as panel_routes
from capataz.api.routes import requests as requests_routes
from capataz.api.routes import runner as runner_routes
from capataz.config import Config
from capataz.mcpserver import HttpEndpoint
from capataz.store import Store

__all__ = ["API_ERRORS", "THREADS", "create_app"]

# Worker threads for the routes that call the Store (each holds one database connection
# while it runs); ``capataz serve`` opens its store with a pool of as many connections,
# so no thread waits for one and none is opened and closed per request. Long-poll claims
# and event streams wait on the event loop and hold neither.
THREADS = 20

_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "ok": {"type": "boolean", "enum": [False]},
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"],
                    },
                },
                "required": ["ok", "error"],
            }
        }
    }
}
API_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": what, **_ERROR}
    for status, what in (
        (401, "Missing, unknown or revoked bearer token"),
        (403, "The token's role may not do this, or the operation is disabled"),
        (404, "No such route, task, run or runner"),
        (409, "The request conflicts with the current state"),
        (422, "Invalid input; the message names the field"),
        (429, "Rate limit exceeded (see Retry-After)"),
        (500, "Unexpected error (details only in the server log)"),
        (503, "The database (or the planner's model API) is unavailable"),
    )
}
# The planner's routes also answer for its model API (docs/planner.md).
PLANNER_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    502: {"description": "The planner's model API refused the key or answered wrongly", **_ERROR},
    504: {"description": "The planner's model API did not answer in time", **_ERROR},
}


class FormAsJson:
    """``curl -d '{...}'`` without a Content-Type sends form encoding; the runbook's
    requeue command (docs/runbook.md) posts JSON exactly that way. The API takes no
    forms, so such bodies are read as the JSON they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            form = b"application/x-www-form-urlencoded"
            scope = dict(scope)
            scope["headers"] = [
                (
                    key,
                    b"application/json"
                    if key == b"content-type" and value.startswith(form)
                    else value,
                )
                for key, value in scope["headers"]
            ]
        await self.app(scope, receive, send)


def create_app(
    store: Store, config: Config, *, state_dir: Path | None = None, threads: int | None = None
) -> FastAPI:
    """The control plane over ``store``; ``config.server`` sets its rate limits and
    guardrails. The caller owns the store (opens and closes it). ``/mcp`` is the MCP
    server over streamable HTTP (docs/mcp.md); it serves while the app's lifespan runs.
    ``threads``: the worker threads of sync routes (default: anyio's 40)."""
    mcp = HttpEndpoint(store, config)
    # Long-poll claims wait on one wake-up per process (NOTIFY, or SQLite's watch); the
    # tick catches what notifies nobody (tasks due by time on PostgreSQL).
    hub = ReadyHub(store, max(config.runner.poll_interval, 5.0))
    sweeper = ServerSweeper(store, config.runner.sweep_interval)
    event_hub = EventHub(store)  # one reader of the events table for every /events stream

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        event_hub.start()
        try:
            async with mcp.running(), running(hub, sweeper):
                yield
        finally:
            await asyncio.to_thread(event_hub.stop)

    app = FastAPI(
        lifespan=lifespan,
        title="capataz control plane",
        version=capataz_version(),
        description=(
            'Every response is {"ok": true, "data": ...} or {"ok": false, "error": '
            '{"code", "message"}}. Every endpoint but /health needs a bearer token '
            "(`capataz token create`)."
        ),
        redoc_url=None,
    )
    app.state.store = store
    app.state.config = config
    app.state.state_dir = state_dir  # the vault's key file lives there (or $CAPATAZ_MASTER_KEY)
    app.state.limiter = RateLimiter(config.server.rate_limit, config.server.rate_burst)
    app.state.tokens = TokenCache()
    app.state.ready_hub = hub
    app.state.sweeper = sweeper
    app.state.event_hub = event_hub
    install_handlers(app)
    app.add_middleware(FormAsJson)
    app.include_router(health.router)
    app.include_router(panel_routes.router)  # the web panel at /, outside the schema
    for module in (ops, tasks, runs, escalations, metrics, events):
        app.include_router(module.router, responses=API_ERRORS)
    app.include_router(planner.router, responses=PLANNER_ERRORS)  # /ops/gpt/run, directives
    app.include_router(runner_routes.router, responses=API_ERRORS)  # remote runners
    app.include_router(runner_context.router, responses=API_ERRORS)  # their tasks' context
    app.include_router(requests_routes.router, responses=API_ERRORS)  # credential requests
    door = McpDoor(mcp, store, app.state.tokens, app.state.limiter)
    # A plain ASGI route (not a Mount): /mcp itself, without a redirect to /mcp/.
    app.router.routes.append(Route("/mcp", door, methods=["GET", "POST", "DELETE"]))
    return app
