"""``/mcp``: the MCP server over streamable HTTP (:mod:`capataz.mcpserver`), behind
the API's own door.

Every request to it passes the same checks as any endpoint, in the same order and
with the same envelope (:mod:`capataz.api.auth`): no token or an unknown one is 401,
a token over its rate is 429, a role that may use no MCP tool (a runner) is 403. Only
then does the MCP server see the request, with the caller's token in the ASGI scope;
it decides per tool what that role may call, from the same table.
"""

from __future__ import annotations

import math

from anyio.to_thread import run_sync
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from capataz.api.auth import RateLimiter, TokenCache
from capataz.api.errors import error_response
from capataz.mcpserver import CALLER, HttpEndpoint
from capataz.store import Store, TokenInfo
from capataz.store.access import NEEDS, Access, may, needs_role_fix

__all__ = ["McpDoor"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class McpDoor:
    """The ASGI app mounted at ``/mcp``: authenticate, rate-limit, then the endpoint."""

    def __init__(
        self, endpoint: HttpEndpoint, store: Store, tokens: TokenCache, limiter: RateLimiter
    ) -> None:
        self.endpoint = endpoint
        self.store = store
        self.tokens = tokens
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal, token = await self._admit(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.endpoint(dict(scope, **{CALLER: token}), receive, send)

    async def _admit(self, scope: Scope) -> tuple[JSONResponse | None, TokenInfo | None]:
        """The refusal to answer with, or None and the caller's token."""
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return error_response(401, "unauthorized", "missing bearer token", _CHALLENGE), None
        token = await run_sync(self.tokens.authenticate, self.store, credentials.strip())
        if token is None:
            return error_response(401, "unauthorized", "invalid token", _CHALLENGE), None
        wait = self.limiter.take(token.id)
        if wait > 0:
            message = f"rate limit exceeded for token {token.id}; retry in {wait:.2f}s"
            retry = {"Retry-After": str(max(1, math.ceil(wait)))}
            return error_response(429, "rate_limited", message, retry), None
        if not may(token.role, Access.READ):
            message = (
                f"role {token.role} cannot use /mcp; needs {NEEDS[Access.READ]} — "
                f"{needs_role_fix(Access.READ)}"
            )
            return error_response(403, "forbidden", message), None
        if not self.endpoint.serving:
            message = "the MCP endpoint is starting or stopping; retry"
            return error_response(503, "unavailable", message), None
        return None, token
