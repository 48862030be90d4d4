"""What a real server cannot easily be made to do: fail unexpectedly. The app must
still answer with the envelope, never a traceback."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import sqlalchemy as sa

from capataz.api import create_app
from capataz.config import Config
from capataz.models import utcnow
from capataz.store import StoreUnavailable, TokenInfo


class _Tokens:
    def authenticate(self, token: str) -> TokenInfo | None:
        return TokenInfo(1, "t", "admin", utcnow(), None, None) if token == "good" else None

    def revocations(self) -> tuple[int, None]:
        return 0, None  # none revoked (the API's token cache asks once a second)


class _Runners:
    def list(self) -> list[Any]:
        raise StoreUnavailable("database postgresql://db/x is unavailable: connection refused")


class _Tasks:
    def get(self, task_id: str) -> Any:
        # Any other database error is a bug: a 500, not a "retry later".
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))


class BrokenStore:
    """Knows one admin token; every figure it is asked for blows up."""

    tokens = _Tokens()
    runners = _Runners()
    tasks = _Tasks()

    def metrics(self) -> dict[str, Any]:
        raise RuntimeError("secret internals /etc/passwd")


def test_unexpected_errors_are_enveloped_without_details() -> None:
    app = create_app(BrokenStore(), Config())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def call(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers={"Authorization": "Bearer good"})

    crashed = anyio.run(call, "/ops/metrics")
    database = anyio.run(call, "/ops/runner/status")
    bug = anyio.run(call, "/ops/tasks/t-1")
    assert crashed.status_code == 500
    assert crashed.json()["error"]["code"] == "internal"
    assert "secret" not in crashed.text
    assert "Traceback" not in crashed.text
    assert database.status_code == 503
    assert database.json()["error"]["code"] == "unavailable"
    assert "connection refused" not in database.text
    assert bug.status_code == 500
    assert bug.json()["error"]["code"] == "internal"
    assert "duplicate key" not in bug.text
