"""`capataz token create|list|revoke` and `capataz serve`: the HTTP control plane and
the credentials for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, opened_store
from capataz.cli.console import err, out
from capataz.cli.options import JsonOption, RepoOption
from capataz.cli.project import open_project
from capataz.errors import CapatazError
from capataz.statedir import state_dir

token_app = typer.Typer(
    name="token", help="Bearer tokens for the HTTP API (`capataz serve`).", no_args_is_help=True
)
app.add_typer(token_app)


@token_app.command("create")
def token_create_command(
    role: Annotated[str, typer.Option("--role", help="admin, operator, runner or viewer.")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses it.")] = "",
    repo_path: RepoOption = Path(),
) -> None:
    """Create a token and print it once: only its hash is kept, so it cannot be shown
    again (revoke it and create another if it is lost)."""
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        token = store.tokens.create(role, name, actor=cli_actor())
    out.print(token, markup=False, highlight=False, soft_wrap=True)
    err.print("store it now: it is not shown again", style="dim")


@token_app.command("list")
def token_list_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Every token with its role and use (never the token itself)."""
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        tokens = store.tokens.list()
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in tokens
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("id", "name", "role", "created", "last used", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            str(t.id),
            t.name,
            t.role,
            f"{t.created_at:%Y-%m-%d %H:%M:%S}",
            f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "never",
            f"{t.revoked_at:%Y-%m-%d %H:%M:%S}" if t.revoked_at else "",
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke_command(
    token_id: Annotated[int, typer.Argument(help="The token id (see `capataz token list`).")],
    repo_path: RepoOption = Path(),
) -> None:
    """Revoke a token: the API refuses it from the next request on."""
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        info = store.tokens.revoke(token_id, actor=cli_actor())
    out.print(f"[green]✓[/] token {info.id} ({info.name}, {info.role}) revoked")


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Serve the HTTP API (the runbook's endpoints, /metrics, /openapi.json) over this
    repository's store until interrupted."""
    import uvicorn

    from capataz.api.app import THREADS, create_app

    repo, config = open_project(repo_path)
    bind = host or config.server.host
    chosen = port if port is not None else config.server.port
    if not 0 < chosen < 65536:
        raise CapatazError(f"--port {chosen}: not a port", fix="use 1-65535")
    # One pooled connection per worker thread (see capataz.api.app.THREADS), and a few
    # for the server's own threads (the sweeper, the event and ready hubs' reads).
    with opened_store(repo, pool=THREADS + 4) as store:
        api = create_app(store, config, state_dir=state_dir(repo.root), threads=THREADS)
        shown = f"[{bind}]" if ":" in bind else bind
        out.print(f"capataz API on http://{shown}:{chosen}", markup=False, highlight=False)
        uvicorn.run(
            api,
            host=bind,
            port=chosen,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,  # open event streams must not hold a restart
        )
