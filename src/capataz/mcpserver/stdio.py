"""``capataz mcp``: the MCP server on this process's stdin and stdout, for an agent
that starts it as a child (``claude mcp add capataz -- capataz mcp``).

The process is started with one token (``CAPATAZ_TOKEN`` or ``--token-file``; the CLI
reads it). It is checked before the first message, so a missing, unknown or useless
token ends the process at once with one line instead of a server that answers every
call with a refusal; and checked again on every call, so revoking it takes effect
without restarting the agent. The token is never printed or logged.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.server.stdio import stdio_server

from capataz.config import Config
from capataz.errors import CapatazError
from capataz.mcpserver.server import UNKNOWN_CALLER, build_server, tools_for
from capataz.store import Store, TokenInfo

__all__ = ["check_token", "serve_stdio"]


def check_token(store: Store, token: str) -> TokenInfo:
    """The token's owner, if it may use at least one tool; a :class:`CapatazError`
    (one line, exit 2) otherwise."""
    message, _, fix = UNKNOWN_CALLER.partition("; ")
    if not token:
        raise CapatazError(
            "capataz mcp needs a token: set CAPATAZ_TOKEN or pass --token-file PATH", fix=fix
        )
    caller = store.tokens.authenticate(token)
    if caller is None:
        raise CapatazError(message, fix=fix)
    if not tools_for(caller.role):
        raise CapatazError(
            f"a {caller.role} token may use no MCP tool (it is for {caller.role}s only)", fix=fix
        )
    return caller


def serve_stdio(store: Store, config: Config, token: str) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""

    def identify(ctx: ServerRequestContext[Any, Any]) -> TokenInfo | None:
        return store.tokens.authenticate(token)

    server = build_server(store, config, identify)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
