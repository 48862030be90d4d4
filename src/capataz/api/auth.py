"""Who may call what: bearer tokens (see ``store.tokens.authenticate``), roles, a token bucket
per token, and the guardrail on destructive operations.

Order matters and is the same everywhere: no token or an unknown one is 401, a token
over its rate is 429, a role that may not do this is 403, and only then is the request
body looked at, so a caller without rights learns nothing about the endpoint's input.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from capataz.api.errors import ApiError
from capataz.config import Config
from capataz.store import Store, TokenInfo

# The one table of who may do what, shared with the MCP server (capataz.mcpserver).
from capataz.store.access import ALLOWED, NEEDS, Access

__all__ = ["ALLOWED", "NEEDS", "Access", "RateLimiter", "TokenCache", "destructive", "requires"]

bearer = HTTPBearer(auto_error=False, description="A token from `capataz token create`.")


class RateLimiter:
    """A token bucket per API token: ``rate`` requests a second on average, up to
    ``burst`` at once. In memory: one server process is the unit being protected."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: int) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        now = self.clock()
        with self._lock:
            tokens, since = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - since) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class TokenCache:
    """Who a bearer token is, remembered so that a request does not read its token's
    row: a fleet of runners calls several times a second each, and looking each token
    up was the largest single cost of a heartbeat (with 200 runners' tokens, a cache
    that forgot after a second missed on most requests).

    A known token is kept for ``keep`` seconds; revocation still takes effect within
    about ``ttl``: once a ``ttl`` at most, one request asks the store whether any token
    was revoked since (:meth:`capataz.store.Store.tokens.revocations`, one small read
    per server process whatever the number of tokens) and, if so, forgets every token.
    An unknown token is remembered as unknown for ``ttl`` only (a token created since
    works within that)."""

    def __init__(
        self, ttl: float = 1.0, keep: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.keep = keep
        self.clock = clock
        self._known: dict[str, tuple[TokenInfo | None, float]] = {}
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one request at a time asks for revocations
        self._checked_at = -math.inf
        self._revoked: object = None

    def cached(self, token: str) -> tuple[bool, TokenInfo | None]:
        """``(True, who)`` when the answer is known without the database (a fresh entry,
        and no look at the revocations due); ``(False, None)``: call
        :meth:`authenticate` (in a thread: it may read). Lets the API answer most
        requests' authentication on the event loop, without a thread."""
        now = self.clock()
        if now - self._checked_at >= self.ttl:
            return False, None
        with self._lock:
            found = self._known.get(token)
        if found is not None and found[1] > now:
            return True, found[0]
        return False, None

    def authenticate(self, store: Store, token: str) -> TokenInfo | None:
        now = self.clock()
        self._check_revocations(store, now)
        with self._lock:
            found = self._known.get(token)
        if found is not None and found[1] > now:
            return found[0]
        info = store.tokens.authenticate(token)
        with self._lock:
            if len(self._known) > 10_000:  # a flood of made-up tokens: start over
                self._known.clear()
            self._known[token] = (info, now + (self.ttl if info is None else self.keep))
        return info

    def _check_revocations(self, store: Store, now: float) -> None:
        """Forget every token when one was revoked since the last look (at most once a
        ``ttl``; while another request looks, the others go on with what is known)."""
        if now - self._checked_at < self.ttl or not self._checking.acquire(blocking=False):
            return
        try:
            if now - self._checked_at < self.ttl:
                return
            revoked = store.tokens.revocations()
            with self._lock:
                if revoked != self._revoked:
                    self._known.clear()
                self._revoked, self._checked_at = revoked, now
        finally:
            self._checking.release()


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def requires(access: Access) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency that lets the request through for the roles ``access`` allows and
    returns the caller's token. Async: a token the cache knows is checked on the event
    loop, and only a lookup that may read the database goes to a worker thread (a sync
    dependency cost every request a thread hop of its own, before the route's)."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> TokenInfo:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        cache: TokenCache = request.app.state.tokens
        known, token = cache.cached(credentials.credentials)
        if not known:
            token = await run_in_threadpool(
                cache.authenticate, request.app.state.store, credentials.credentials
            )
        if token is None:
            raise ApiError(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        limiter: RateLimiter = request.app.state.limiter
        wait = limiter.take(token.id)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit exceeded for token {token.id}; retry in {wait:.2f}s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if token.role not in ALLOWED[access]:
            raise ApiError(
                403,
                f"role {token.role} cannot {request.method} {_route_path(request)}; "
                f"needs {NEEDS[access]}",
            )
        return token

    return check


def destructive(request: Request) -> None:
    """Refuse destructive or service-control operations unless the server's config
    turns them on; the message names the switch."""
    config: Config = request.app.state.config
    if not config.server.allow_destructive:
        raise ApiError(
            403,
            f"{request.method} {_route_path(request)} is disabled: destructive operations "
            "need `[server] allow_destructive = true` in capataz.toml",
            code="disabled",
        )
