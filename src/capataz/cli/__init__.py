"""The `capataz` command. Commands are thin: parse, call the library, format."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from capataz.cli.console import err
from capataz.errors import CapatazError
from capataz.redaction import redact

__all__ = ["app", "main"]

app = typer.Typer(
    name="capataz",
    help="Foreman for autonomous coding agents: sandboxed runs, gates, decisions, rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands register themselves on import.
from capataz.cli import (  # noqa: E402
    admin_cmds,
    context_cmds,
    gc_cmds,
    mcp_cmds,
    plan_cmds,
    prd_cmds,
    run_cmds,
    run_views,
    runner_cmds,
    secret_cmds,
    server_cmds,
    setup_cmds,
    task_cmds,
)

del admin_cmds, context_cmds, gc_cmds, mcp_cmds, plan_cmds, prd_cmds, run_cmds, run_views
del runner_cmds
del secret_cmds, server_cmds, setup_cmds, task_cmds


def main() -> None:
    """Entry point: every deliberate error becomes one line and a non-zero exit code.

    Typer keeps its standalone mode (usage errors print usage and exit 2); only
    capataz's own errors are caught here."""
    try:
        app()
    except CapatazError as exc:
        fix = f" — {exc.fix}" if exc.fix else ""
        err.print(
            f"[bold red]error:[/] {escape(redact(exc.message + fix))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(exc.exit_code)
