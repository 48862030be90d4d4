"""Streamable HTTP: the MCP server as an ASGI endpoint that ``capataz serve`` mounts
at ``/mcp``.

Stateless, with JSON answers: every POST is one request, answered in its own body, and
carries its own bearer token, so the server keeps nothing per client (a restart loses
no session, and a revoked token stops working at the next request). Authentication is
the API's (it answers 401/429/403 in its own envelope before a request gets here) and
leaves the caller's token in the ASGI scope under :data:`CALLER`; the tools read it
from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from capataz.config import Config
from capataz.mcpserver.server import build_server
from capataz.store import Store, TokenInfo

__all__ = ["CALLER", "HttpEndpoint"]

CALLER = "capataz.caller"  # the ASGI scope key of the authenticated TokenInfo


def _caller(ctx: ServerRequestContext[Any, Any]) -> TokenInfo | None:
    request = ctx.request
    scope = getattr(request, "scope", None)
    found = scope.get(CALLER) if isinstance(scope, dict) else None
    return found if isinstance(found, TokenInfo) else None


class HttpEndpoint:
    """The ``/mcp`` endpoint over ``store``. It serves only while :meth:`running` is
    entered (the app's lifespan): the SDK's session manager needs a task group, and a
    manager runs once, so each lifespan makes its own."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._manager: StreamableHTTPSessionManager | None = None

    @property
    def serving(self) -> bool:
        return self._manager is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        manager = StreamableHTTPSessionManager(
            app=build_server(self.store, self.config, _caller),
            stateless=True,
            json_response=True,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request, already authenticated (see :data:`CALLER`)."""
        if self._manager is None:
            raise RuntimeError("the MCP endpoint is not running (enter HttpEndpoint.running)")
        await self._manager.handle_request(scope, receive, send)
