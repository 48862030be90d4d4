"""The API's token cache: a known token is not read again for a minute, unless any
token was revoked meanwhile (one read of the revocations per second, not one token read
per request). A fake clock and a counting store, no server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from capataz.api.auth import TokenCache
from capataz.models import utcnow
from capataz.store import TokenInfo


class CountingTokens:
    def __init__(self) -> None:
        self.reads = 0
        self.revoked: set[str] = set()
        self.mark: tuple[int, datetime | None] = (0, None)

    def authenticate(self, token: str) -> TokenInfo | None:
        self.reads += 1
        if token in self.revoked:
            return None
        return TokenInfo(1, token, "runner", utcnow(), None, None)

    def revocations(self) -> tuple[int, datetime | None]:
        return self.mark

    def revoke(self, token: str) -> None:
        self.revoked.add(token)
        self.mark = (self.mark[0] + 1, utcnow())


class FakeStore:
    def __init__(self) -> None:
        self.tokens = CountingTokens()


def test_a_known_token_is_kept_until_a_revocation_then_forgotten_within_the_ttl() -> None:
    now = [100.0]
    cache = TokenCache(ttl=1.0, keep=60.0, clock=lambda: now[0])
    store: Any = FakeStore()
    assert cache.authenticate(store, "a") is not None
    assert cache.authenticate(store, "b") is not None
    for _ in range(30):  # half a minute of requests: no token is read again
        now[0] += 0.5
        assert cache.authenticate(store, "a") is not None
        assert cache.authenticate(store, "b") is not None
    assert store.tokens.reads == 2
    store.tokens.revoke("a")
    now[0] += 1.0  # the next look at the revocations forgets every token
    assert cache.authenticate(store, "a") is None
    assert cache.authenticate(store, "b") is not None
    assert store.tokens.reads == 4


def test_cached_answers_without_the_store_only_while_nothing_is_due() -> None:
    now = [0.0]
    cache = TokenCache(ttl=1.0, keep=60.0, clock=lambda: now[0])
    store: Any = FakeStore()
    assert cache.cached("a") == (False, None)  # revocations never looked at
    cache.authenticate(store, "a")
    known, who = cache.cached("a")
    assert known and who is not None and who.name == "a"
    assert cache.cached("unknown") == (False, None)
    now[0] += 1.0  # a look at the revocations is due: go through authenticate
    assert cache.cached("a") == (False, None)
