"""Acceptance: ``/mcp`` under a real ``capataz serve`` (tests/serving.py), driven by the
MCP SDK's streamable HTTP client with a bearer token, and by plain HTTP for what a
client without a usable token is answered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from tests.mcpserver.conftest import (
    ALL_TOOLS,
    READ_TOOLS,
    SECRET_NAME,
    World,
    call,
    data,
    error_text,
    tool_names,
)
from tests.serving import start_serve, stop_serve


@pytest.fixture
def base(world: World) -> Iterator[str]:
    proc, url = start_serve(world.repo, world.env)
    try:
        yield url
    finally:
        stop_serve(proc)


@asynccontextmanager
async def over_http(base: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_without_a_usable_token_mcp_answers_in_the_api_envelope(world: World, base: str) -> None:
    hello: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    none = httpx.post(f"{base}/mcp", json=hello, timeout=30)
    unknown = httpx.post(
        f"{base}/mcp", json=hello, headers={"Authorization": "Bearer cap_nope"}, timeout=30
    )
    runner = httpx.post(
        f"{base}/mcp",
        json=hello,
        headers={"Authorization": f"Bearer {world.tokens['runner']}"},
        timeout=30,
    )
    assert none.status_code == 401
    assert none.headers["WWW-Authenticate"] == "Bearer"
    assert none.json() == {
        "ok": False,
        "error": {"code": "unauthorized", "message": "missing bearer token"},
    }
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "invalid token"
    assert runner.status_code == 403
    message = runner.json()["error"]["message"]
    assert "role runner" in message and "capataz token create --role viewer" in message


def test_roles_over_http_see_and_may_call_what_the_table_says(world: World, base: str) -> None:
    async def scenario() -> dict[str, Any]:
        async with over_http(base, world.tokens["viewer"]) as viewer:
            seen: dict[str, Any] = {
                "viewer_tools": await tool_names(viewer),
                "tasks": data(await call(viewer, "list_tasks", status="ready")),
                "log": data(await call(viewer, "run_log", run_id=world.run_id)),
                "refused": error_text(
                    await call(
                        viewer,
                        "add_subtask",
                        parent_task_id=world.parent_id,
                        name="tests",
                        instruction="add tests",
                    )
                ),
            }
        async with over_http(base, world.tokens["operator"]) as operator:
            seen["operator_tools"] = await tool_names(operator)
            arguments = {
                "parent_task_id": world.parent_id,
                "name": "tests",
                "instruction": "add tests",
            }
            seen["first"] = data(await call(operator, "add_subtask", **arguments))
            seen["again"] = data(await call(operator, "add_subtask", **arguments))
        return seen

    seen = anyio.run(scenario)
    assert seen["viewer_tools"] == READ_TOOLS
    assert seen["operator_tools"] == ALL_TOOLS
    assert [t["id"] for t in seen["tasks"]["tasks"]] == [world.parent_id]
    assert f"***{SECRET_NAME}***" in seen["log"]["log"]
    assert "add_subtask needs role operator" in seen["refused"]
    assert "capataz token create --role operator" in seen["refused"]
    assert seen["first"]["created"] is True
    assert seen["again"]["created"] is False
    assert seen["again"]["task"]["id"] == seen["first"]["task"]["id"]
    store = world.store()
    try:
        added = store.tasks.get(seen["first"]["task"]["id"])
        count = len(store.tasks.list())
    finally:
        store.close()
    assert added.depends_on == (world.parent_id,)
    assert "subtask" in added.labels
    assert count == 3


def test_the_api_rate_limit_applies_to_mcp(world: World) -> None:
    """A server whose tokens may make two requests: the third is 429 like any route."""
    (world.repo / "capataz.toml").write_text(
        (world.repo / "capataz.toml").read_text() + "[server]\nrate_limit = 0.001\nrate_burst = 2\n"
    )
    proc, limited = start_serve(world.repo, world.env)
    try:
        headers = {"Authorization": f"Bearer {world.tokens['viewer']}"}
        hello: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        answers = [
            httpx.post(f"{limited}/mcp", json=hello, headers=headers, timeout=30) for _ in range(3)
        ]
    finally:
        stop_serve(proc)
    assert [a.status_code for a in answers] == [200, 200, 429], answers[0].text
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in answers[-1].headers
