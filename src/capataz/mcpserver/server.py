"""The MCP server over one store: ``tools/list`` and ``tools/call`` with every call
checked against the caller's role, the same for stdio and streamable HTTP.

Built on the SDK's low-level :class:`mcp.server.lowlevel.Server` rather than its
decorator front end (``MCPServer``), because the list of tools depends on who asks: a
viewer is not shown ``add_subtask`` at all. Who asks is the transport's business
(:data:`Identify`): stdio has the one token the process was started with, HTTP a
token per request.

A tool's refusal (no such task, a bad agent, a role that may not call it) is a tool
result with ``isError`` and one line saying what and how to fix it, so that an agent
reads it and can correct itself; nothing reaches the client as a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio.to_thread
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR
from pydantic import ValidationError

from capataz.config import Config
from capataz.errors import CapatazError
from capataz.mcpserver.tools import TOOLS, Tool, masked
from capataz.redaction import redact
from capataz.store import NoSuchTaskError, Store, StoreUnavailable, TokenInfo
from capataz.store.access import NEEDS, Access, may, needs_role_fix
from capataz.store.errors import NoSuchRunError

__all__ = ["INSTRUCTIONS", "Identify", "build_server", "tools_for"]

log = logging.getLogger("capataz.mcpserver")

Identify = Callable[[ServerRequestContext[Any, Any]], TokenInfo | None]
"""Who makes this request: the caller's token, or None when it is unknown or revoked."""

INSTRUCTIONS = (
    "capataz runs coding tasks with agents in a sandbox, gates their results and keeps "
    "the evidence. Read the queue with list_tasks, show_task, show_run and run_log. "
    "To split your own work, queue subtasks of your task with add_subtask (they run "
    "after your task lands, and never if it fails)."
)
UNKNOWN_CALLER = (
    "the token is unknown or revoked; create one with `capataz token create --role viewer` "
    "(operator to add subtasks)"
)


def tools_for(role: str) -> list[Tool]:
    """The tools a token of ``role`` may call, and so the ones it is shown."""
    return [tool for tool in TOOLS if may(role, tool.access)]


def _capataz_version() -> str:
    try:
        return version("capataz")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=redact(text))], is_error=True
    )


def _answer(data: dict[str, Any]) -> types.CallToolResult:
    shown = masked(data)
    text = json.dumps(shown, indent=1, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=shown
    )


def _invalid(tool: Tool, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'arguments'}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    )
    return f"{tool.name}: {problems} — see the tool's input schema in tools/list"


def build_server(store: Store, config: Config, identify: Identify) -> Server[Any]:
    """A server whose tools answer from ``store`` (and ``config``, for agents), for
    the callers ``identify`` names. The store's calls block, so they run in a worker
    thread: one slow query does not stall the other requests of an HTTP server."""

    async def who(ctx: ServerRequestContext[Any, Any]) -> TokenInfo | None:
        try:
            return await anyio.to_thread.run_sync(identify, ctx)
        except StoreUnavailable as exc:  # its message may name the database: log it only
            log.error("database unavailable while checking a token: %s", exc)
            raise MCPError(INTERNAL_ERROR, "the database is unavailable; retry later") from None

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = await who(ctx)
        shown = tools_for(caller.role) if caller is not None else []
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.schema(),
                    annotations=types.ToolAnnotations(
                        read_only_hint=t.access is Access.READ,
                        destructive_hint=False,
                        idempotent_hint=True,  # add_subtask too: a repeated call adds nothing
                    ),
                )
                for t in shown
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = await who(ctx)
        if caller is None:
            return _error(UNKNOWN_CALLER)
        tool = next((t for t in TOOLS if t.name == params.name), None)
        if tool is None:
            known = ", ".join(t.name for t in tools_for(caller.role)) or "none"
            return _error(f"no tool {params.name!r}; the tools for your role are: {known}")
        if not may(caller.role, tool.access):
            return _error(
                f"{tool.name} needs role {NEEDS[tool.access]}; this token's role is "
                f"{caller.role} — {needs_role_fix(tool.access)}"
            )
        try:
            args = tool.input.model_validate(params.arguments or {})
        except ValidationError as exc:
            return _error(_invalid(tool, exc))
        return await anyio.to_thread.run_sync(_run, tool, store, config, caller, args)

    return Server(
        "capataz",
        version=_capataz_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _run(
    tool: Tool, store: Store, config: Config, caller: TokenInfo, args: Any
) -> types.CallToolResult:
    """One call of ``tool``: its answer, or its refusal as one line (``message — fix``)."""
    try:
        return _answer(tool.run(store, config, caller, args))
    except StoreUnavailable as exc:
        log.error("database unavailable in %s: %s", tool.name, exc)
        return _error(f"{tool.name}: the database is unavailable — retry later")
    except NoSuchTaskError as exc:
        return _error(f"{tool.name}: {exc.message} — list_tasks shows the task ids")
    except NoSuchRunError as exc:
        return _error(f"{tool.name}: {exc.message} — show_task lists a task's runs")
    except CapatazError as exc:
        return _error(f"{tool.name}: {exc}")
    except Exception:
        log.exception("unexpected error in tool %s", tool.name)
        return _error(f"{tool.name}: internal error — the server's log has the details")
