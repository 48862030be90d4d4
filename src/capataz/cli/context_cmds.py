"""`capataz context get|set|list|rm`: the context store shared between tasks, from a
shell or a script.

Values are JSON. ``set`` stores its VALUE as a string unless ``--json-value`` says it is
JSON text; ``get`` prints a string value as it is (so ``$(capataz context get k)``
works) and anything else as JSON. ``list`` shows keys, the task that published each,
and times, never values unless ``--values`` asks for them (they are decrypted only
then). A bad key exits 2 with one line; a missing key exits 1 (like grep), so a script
can tell "absent" from "wrong".
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, discover_repo, opened_store
from capataz.cli.console import out
from capataz.cli.console import table as console_table
from capataz.cli.options import JsonOption, RepoOption
from capataz.context.keys import ContextError, check_key
from capataz.context.store import ContextInfo, ContextStore, open_context_store
from capataz.names import validate_task_id
from capataz.store import Store
from capataz.units import parse_duration

__all__ = ["context_app"]

KeyArgument = Annotated[str, typer.Argument(help="The key, e.g. build.version.")]

context_app = typer.Typer(
    name="context",
    help="Read and write the encrypted context tasks share with their dependents.",
    no_args_is_help=True,
)
app.add_typer(context_app)


def _info_json(info: ContextInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "task_id": info.task_id,
        "updated_at": info.updated_at.isoformat(),
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
    }


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _context(repo_path: Path) -> tuple[Path, AbstractContextManager[Store]]:
    repo = discover_repo(repo_path)
    return repo.root, opened_store(repo)


@context_app.command("get")
def get_command(
    key: KeyArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """Print the value of KEY (strings as they are, anything else as JSON)."""
    check_key(key)
    root, opened = _context(repo_path)
    with opened as store:
        info, value = open_context_store(store, root).entry(key)
    if as_json:
        typer.echo(json.dumps({**_info_json(info), "value": value}, ensure_ascii=False))
        return
    typer.echo(_plain(value))


@context_app.command("set")
def set_command(
    key: KeyArgument,
    value: Annotated[str, typer.Argument(help="The value (a string unless --json-value).")],
    json_value: Annotated[
        bool, typer.Option("--json-value", help="VALUE is JSON text (a number, an object...).")
    ] = False,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Expire after this long (30m, 1h, 7d).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Publish it as this task's: its dependents receive it."),
    ] = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Store VALUE under KEY (replacing what was there)."""
    check_key(key)
    parsed: Any = value
    if json_value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ContextError(
                f"--json-value: {value!r} is not JSON ({exc.msg})",
                fix="quote strings as JSON ('\"text\"') or drop --json-value",
            ) from None
    seconds = None
    if ttl is not None:
        try:
            seconds = parse_duration(ttl)
        except ValueError as exc:
            raise ContextError(f"--ttl: {exc}", fix="e.g. --ttl 30m or --ttl 1h") from None
    root, opened = _context(repo_path)
    with opened as store:
        if task is not None:
            store.tasks.get(validate_task_id(task))  # an unknown task: one clear line
        context = open_context_store(store, root)
        context.set(key, parsed, task_id=task, ttl=seconds)
        info, _ = context.entry(key)
    if as_json:
        typer.echo(json.dumps(_info_json(info)))
        return
    line = Text.assemble(("set ", "bold green"), (key, "bold"))
    if info.expires_at:
        line.append(f"  (expires {info.expires_at:%Y-%m-%d %H:%M:%S} UTC)", style="dim")
    out.print(line)


@context_app.command("list")
def list_command(
    prefix: Annotated[str | None, typer.Option("--prefix", help="Only keys starting so.")] = None,
    values: Annotated[bool, typer.Option("--values", help="Decrypt and show values.")] = False,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """List the unexpired entries: key, publishing task, updated, expires."""
    root, opened = _context(repo_path)
    with opened as store:
        context: ContextStore = open_context_store(store, root)
        infos = context.list(prefix)
        decrypted = context.values(prefix) if values else {}
    if as_json:
        rows = [
            {**_info_json(i), **({"value": decrypted.get(i.key)} if values else {})} for i in infos
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not infos:
        out.print(Text("no context entries", style="dim"))
        return
    table = console_table("key", "task", "updated", "expires", *(("value",) if values else ()))
    for info in infos:
        expires = f"{info.expires_at:%Y-%m-%d %H:%M:%S}" if info.expires_at else "never"
        cells = [info.key, info.task_id or "-", f"{info.updated_at:%Y-%m-%d %H:%M:%S}", expires]
        if values:
            cells.append(_plain(decrypted.get(info.key)))
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)


@context_app.command("rm")
def rm_command(key: KeyArgument, repo_path: RepoOption = Path()) -> None:
    """Remove KEY."""
    check_key(key)
    root, opened = _context(repo_path)
    with opened as store:
        open_context_store(store, root).remove(key, actor=cli_actor())
    out.print(Text.assemble(("removed ", "bold green"), (key, "bold")))
