"""A repository with a queue for the MCP tests: a token for every role, a parent task,
and a finished run of another task with steps, a log, file changes, violations and a
decision, written through the store's facades as a runner would.

The MCP tests talk to the real thing: the SDK's own client against the venv's
``capataz mcp`` over stdio, or against ``capataz serve``'s ``/mcp`` over streamable
HTTP (:mod:`tests.serving`). SQLite only: the tools read and write through facades that
the store suite already runs on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from capataz.store import RunDetails, Store

CONFIG = '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n'
ROLES = ("admin", "operator", "runner", "viewer")
READ_TOOLS = ["list_tasks", "show_task", "show_run", "run_log"]
ALL_TOOLS = [*READ_TOOLS, "add_subtask"]
SECRET_NAME = "DEPLOY_KEY"
SECRET_VALUE = "s3cr3t-deploy-value-0451"
# The venv's console script, as a user (or Claude Code) starts it.
CAPATAZ = str(Path(sys.executable).with_name("capataz"))


@dataclass
class World:
    repo: Path
    url: str
    env: dict[str, str]
    tokens: dict[str, str]
    parent_id: str
    run_task_id: str
    run_id: str
    errlog: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Store:
        return Store.open(self.url)

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAPATAZ, *args],
            cwd=self.repo,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def world(make_repo: Callable[..., Path], tmp_path: Path) -> World:
    repo = make_repo(config=CONFIG)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url, "COLUMNS": "200"}
    env.pop("CAPATAZ_TOKEN", None)
    # A credential in the vault: whatever the tools return must mask it.
    stored = subprocess.run(
        [CAPATAZ, "secret", "set", SECRET_NAME],
        cwd=repo,
        env=env,
        input=SECRET_VALUE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stored.returncode == 0, stored.stderr
    store = Store.open(url)
    try:
        tokens = {role: store.tokens.create(role, f"test-{role}") for role in ROLES}
        ran = store.tasks.add("touch the docs", "echo docs > docs.md")
        runner = store.runners.register("r1", hostname="h", pid=1, concurrency=1)
        claimed = store.leases.claim(runner)
        assert claimed is not None and claimed.id == ran.id
        store.runs.step_started(claimed.run_id, "agent")
        for number in range(1, 31):
            store.runs.append_log(claimed.run_id, f"line {number}\n")
        store.runs.append_log(claimed.run_id, f"deploying with {SECRET_VALUE}\n")
        store.runs.step_finished(claimed.run_id, "agent", "ok")
        details = RunDetails(
            outcome="rejected",
            wall_seconds=2.5,
            file_changes=[{"path": "docs.md", "kind": "added"}],
            violations=[{"type": "protected_path", "severity": "high", "file": "docs.md"}],
            decisions=[{"phase": "gates", "decision": "reject", "reason": "protected path"}],
        )
        assert store.leases.complete(
            ran.id,
            claimed.fencing_token,
            "blocked",
            "PROTECTED_PATH: docs.md",
            decision="block",
            details=details,
        )
        parent = store.tasks.add("write the parser", "write the parser", agent="shell")
    finally:
        store.close()
    return World(
        repo=repo,
        url=url,
        env=env,
        tokens=tokens,
        parent_id=parent.id,
        run_task_id=ran.id,
        run_id=claimed.run_id,
        errlog=tmp_path / "mcp-stderr.log",
    )


@asynccontextmanager
async def over_stdio(world: World, role: str) -> AsyncIterator[ClientSession]:
    """An initialized session with ``capataz mcp`` started as the SDK starts servers,
    with the role's token in CAPATAZ_TOKEN; its stderr goes to ``world.errlog``."""
    params = StdioServerParameters(
        command=CAPATAZ,
        args=["mcp"],
        env={**world.env, "CAPATAZ_TOKEN": world.tokens[role]},
        cwd=world.repo,
    )
    with world.errlog.open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def tool_names(session: ClientSession) -> list[str]:
    return [tool.name for tool in (await session.list_tools()).tools]


async def call(session: ClientSession, tool: str, /, **arguments: Any) -> CallToolResult:
    return await session.call_tool(tool, arguments)


def data(result: CallToolResult) -> Any:
    """A successful answer's JSON; the text content and the structured one agree."""
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.content
    assert len(result.content) == 1
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    return text
