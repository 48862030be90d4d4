"""`capataz secret set|list|rm|rotate-key` and `capataz request list`: the vault and
the credential requests from a shell.

A value never comes from the command line (shell history, ``ps`` and audit logs keep
argv): `secret set` reads it from a hidden prompt, asked twice, or from standard input
when that is not a terminal. Nothing here ever prints a value. Listing and removing
need no master key (names are not encrypted); storing and rotating do, and refuse with
one line when the key is missing, unsafe or not the one the vault was written with.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, opened_store
from capataz.cli.console import err, out
from capataz.cli.console import table as console_table
from capataz.cli.options import JsonOption, RepoOption
from capataz.cli.project import open_project
from capataz.config import Config
from capataz.names import check_secret_name
from capataz.secrets.credentials import (
    RequestStatus,
    agents_allowed,
    request_states,
    requests_for,
)
from capataz.secrets.vault import (
    KEY_ENV,
    KEY_FILE,
    MasterKey,
    Vault,
    VaultError,
    rotate_master_key,
)
from capataz.statedir import state_dir
from capataz.store import Store

__all__ = ["read_secret_value"]

NameArgument = Annotated[str, typer.Argument(help="The secret's name, e.g. OPENAI_API_KEY.")]

secret_app = typer.Typer(
    name="secret",
    help="Secrets for agents, encrypted at rest (values never shown).",
    no_args_is_help=True,
)
request_app = typer.Typer(
    name="request", help="Credentials the project declared it needs.", no_args_is_help=True
)
app.add_typer(secret_app)
app.add_typer(request_app)

STATUS_STYLE = {RequestStatus.WAITING: "bold yellow", RequestStatus.PROVIDED: "green"}


def _table(*columns: str) -> Table:
    return console_table(*columns)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def read_secret_value(name: str) -> str:
    """The value from a hidden prompt (asked twice: a typo would be stored unseen), or
    from standard input when it is piped, without its one trailing newline."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"value of {name} (hidden): ")
        second = getpass.getpass("again, to confirm: ")
        if first != second:
            raise VaultError("the two values differ; nothing was stored", fix="type it again")
        value = first
    else:
        value = sys.stdin.read()
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise VaultError(
            f"empty value for {name}; nothing was stored",
            fix=f'type the value at the prompt, or pipe it: `printf %s "$VALUE" | '
            f"capataz secret set {name}`",
        )
    return value


def _vault(store: Store, repo_root: Path, *, create: bool) -> Vault:
    """The vault with its master key, checked against what is stored: a wrong key is one
    clear line now, never a row written under a second key. A key file is created only
    for an empty vault (a new key could not open existing rows)."""
    directory = state_dir(repo_root)
    creating = create and not store.secrets.rows() and not (directory / KEY_FILE).exists()
    existed = (directory / KEY_FILE).exists()
    vault = Vault(store, MasterKey.load(directory, create=creating))
    vault.check()
    if vault.key.path is not None and not existed:
        err.print(
            f"created the master key {escape(str(vault.key.path))} (mode 0600): back it up; "
            f"without it the secrets cannot be read (or set {KEY_ENV} instead)",
            highlight=False,
        )
    return vault


@secret_app.command("set")
def secret_set_command(
    name: NameArgument,
    value: Annotated[str | None, typer.Argument(hidden=True, show_default=False)] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Store a secret, encrypted. The value is read from a hidden prompt, or from
    standard input when piped (`printf %s "$VALUE" | capataz secret set NAME`)."""
    check_secret_name(name)
    if value is not None:
        raise VaultError(
            "secret values are not taken from the command line (shell history and `ps` "
            "would keep them); nothing was stored",
            fix=f"run `capataz secret set {name}` and type it at the prompt, or pipe it in",
        )
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        # A key that exists is checked before the value is asked for; a new one is made
        # only once there is a value to keep (a refused input leaves nothing behind).
        has_key = (
            bool(os.environ.get(KEY_ENV, "").strip()) or (state_dir(repo.root) / KEY_FILE).exists()
        )
        vault = _vault(store, repo.root, create=False) if has_key or store.secrets.rows() else None
        secret = read_secret_value(name)
        vault = vault or _vault(store, repo.root, create=True)
        new = vault.set(name, secret, actor=cli_actor())
    provided = requests_for(config, name)
    also = f"; request {', '.join(provided)} is now PROVIDED" if provided else ""
    out.print(f"[green]✓[/] {'stored' if new else 'replaced'} {name}{escape(also)}")


@secret_app.command("list")
def secret_list_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Every secret: stored (PROVIDED) or only declared (WAITING), who may use it,
    which request declares it, when it changed. Never a value."""
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        rows = {row.name: row for row in store.secrets.rows()}
    declared = [r.secret for r in config.requests]
    declared += [n for agent in config.agents.values() for n in agent.secrets]
    declared += [n for gate in config.gates for n in gate.secrets]
    listed: list[dict[str, Any]] = []
    for name in sorted({*rows, *declared}):
        row = rows.get(name)
        listed.append(
            {
                "name": name,
                "status": (RequestStatus.PROVIDED if row else RequestStatus.WAITING).value,
                "agents": agents_allowed(config, name),
                "gates": [g.name for g in config.gates if name in g.secrets],
                "requests": requests_for(config, name),
                "updated_at": _when(row.updated_at) if row else None,
                "updated_by": row.updated_by if row else None,
                "rotated_at": _when(row.rotated_at) if row else None,
            }
        )
    if as_json:
        out.print_json(json.dumps(listed))
        return
    if not listed:
        out.print("no secrets (store one with `capataz secret set NAME`)", highlight=False)
        return
    table = _table("name", "status", "agents", "request", "updated", "rotated")
    for item in listed:
        status = RequestStatus(item["status"])
        users = [*item["agents"], *(f"gate:{g}" for g in item["gates"])]
        table.add_row(
            item["name"],
            Text(status.value, style=STATUS_STYLE[status]),
            Text(", ".join(users) or "(none)"),
            Text(", ".join(item["requests"])),
            (item["updated_at"] or "")[:19].replace("T", " "),
            (item["rotated_at"] or "never" if item["updated_at"] else "")[:19].replace("T", " "),
        )
    out.print(table)


@secret_app.command("rm")
def secret_rm_command(name: NameArgument, repo_path: RepoOption = Path()) -> None:
    """Delete a secret (agents that need it wait again until it is set)."""
    check_secret_name(name)
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        if not store.secrets.delete(name, actor=cli_actor()):
            raise VaultError(f"no secret {name}", fix="`capataz secret list` shows the names")
    waiting = requests_for(config, name)
    also = f"; request {', '.join(waiting)} is WAITING again" if waiting else ""
    out.print(f"[green]✓[/] removed {name}{escape(also)}")


@secret_app.command("rotate-key")
def secret_rotate_key_command(repo_path: RepoOption = Path()) -> None:
    """Re-encrypt every secret (and context entry) under a new master key. With a key
    file the new key is generated for you; interrupted, nothing is lost and running it
    again completes. With $CAPATAZ_MASTER_KEY, put the new key first in it
    (`new,old`), run this, then drop the old one."""
    repo, _ = open_project(repo_path)
    started = time.monotonic()
    with opened_store(repo) as store, err.status("re-encrypting the vault under a new key…"):
        count, source = rotate_master_key(store, state_dir(repo.root), actor=cli_actor())
    seconds = time.monotonic() - started
    out.print(
        f"[green]✓[/] re-encrypted {count} value{'s' if count != 1 else ''} "
        f"in {seconds:.2f} s; the key is now in {escape(source)}",
        highlight=False,
    )
    if source == KEY_ENV:
        err.print(f"now remove the old key from {KEY_ENV} (keep only the first)", style="dim")


def _requests(config: Config, store: Store) -> list[dict[str, Any]]:
    provided = {row.name for row in store.secrets.rows([r.secret for r in config.requests])}
    return [state.as_json() for state in request_states(config, provided)]


@request_app.command("list")
def request_list_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Every credential request of capataz.toml's [[requests]], WAITING or PROVIDED."""
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        requests = _requests(config, store)
    if as_json:
        out.print_json(json.dumps(requests))
        return
    if not requests:
        out.print("no credential requests (declare them as [[requests]] in capataz.toml)")
        return
    table = _table("id", "secret", "status", "agents", "description")
    for item in requests:
        status = RequestStatus(item["status"])
        table.add_row(
            Text(item["id"]),
            Text(item["secret"]),
            Text(status.value, style=STATUS_STYLE[status]),
            Text(", ".join(item["agents"])),
            Text(item["description"]),
        )
    out.print(table)
