"""`capataz mcp`: the MCP server on stdio, for agents such as Claude Code
(docs/mcp.md). The token comes from ``CAPATAZ_TOKEN`` or ``--token-file``, as for
``capataz runner run``; there is no ``--token`` because arguments show in ``ps``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from capataz.cli import app
from capataz.cli.admin_cmds import opened_store
from capataz.cli.options import RepoOption
from capataz.cli.project import open_project
from capataz.errors import CapatazError

HOW_TO_GET_ONE = "create one with `capataz token create --role viewer` (operator to add subtasks)"


@app.command("mcp")
def mcp_command(
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Read the token from this file (else CAPATAZ_TOKEN)."),
    ] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Serve MCP on stdin/stdout: agents list tasks, read runs and their logs, and
    queue subtasks of their own task, as far as the token's role allows (viewer reads;
    operator and admin also add subtasks). Register it with
    `claude mcp add capataz -e CAPATAZ_TOKEN=cap_... -- capataz mcp`."""
    from capataz.mcpserver import check_token, serve_stdio

    token = _token(token_file)
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        check_token(store, token)
        serve_stdio(store, config, token)


def _token(token_file: Path | None) -> str:
    """The token from --token-file, else CAPATAZ_TOKEN; never echoed."""
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CapatazError(
                f"cannot read --token-file {token_file}: {exc.strerror}", fix=HOW_TO_GET_ONE
            ) from None
    token = os.environ.get("CAPATAZ_TOKEN", "").strip()
    if not token:
        raise CapatazError(
            "capataz mcp needs a token: set CAPATAZ_TOKEN or pass --token-file PATH",
            fix=HOW_TO_GET_ONE,
        )
    return token
