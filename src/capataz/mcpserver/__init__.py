"""The MCP server: agents (Claude Code and others) read the queue and queue subtasks of
their own task through the Model Context Protocol, over stdio (``capataz mcp``) or
streamable HTTP (``/mcp`` under ``capataz serve``), with every call checked against
the caller's token role (docs/mcp.md).

Named ``mcpserver`` so that it never shadows the SDK's own ``mcp`` package.
"""

from capataz.mcpserver.http import CALLER, HttpEndpoint
from capataz.mcpserver.server import build_server, tools_for
from capataz.mcpserver.stdio import check_token, serve_stdio
from capataz.mcpserver.tools import TOOLS, Tool, subtask_key

__all__ = [
    "CALLER",
    "TOOLS",
    "HttpEndpoint",
    "Tool",
    "build_server",
    "check_token",
    "serve_stdio",
    "subtask_key",
    "tools_for",
]
