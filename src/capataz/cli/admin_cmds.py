"""`capataz audit verify|export` and `capataz db upgrade`, plus :func:`opened_store`,
the one way commands reach the repository's database."""

from __future__ import annotations

import getpass
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from capataz.cli import app
from capataz.cli.console import out
from capataz.cli.options import JsonOption, RepoOption
from capataz.errors import CapatazError
from capataz.secrets.vault import install_redaction
from capataz.statedir import state_dir
from capataz.store import Store, create_engine_for, database_url, upgrade
from capataz.store.engine import redacted_url
from capataz.store.migrate import current_revision
from capataz.workspace.repo import Repository

__all__ = ["cli_actor", "discover_repo", "opened_store"]


audit_app = typer.Typer(
    name="audit", help="Check and export the tamper-evident audit trail.", no_args_is_help=True
)
db_app = typer.Typer(name="db", help="The database behind the task queue.", no_args_is_help=True)
app.add_typer(audit_app)
app.add_typer(db_app)


class AuditBrokenError(CapatazError):
    """The audit chain does not verify: exit 1, like a failed check, not a usage error."""

    exit_code = 1


def cli_actor() -> str:
    """Who the audit trail records for commands typed by a person: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no USER variable and no passwd entry (some containers)
        return "cli"


@contextmanager
def opened_store(
    repo: Repository, *, strict_vault: bool = False, pool: int | None = None
) -> Iterator[Store]:
    """The store of ``repo`` ($CAPATAZ_DATABASE_URL, else .capataz/capataz.db), migrated
    to the newest schema, closed afterwards. A database that cannot be opened, or is
    away, is one StoreError line (the store says which); anything else is a bug and
    keeps its traceback. Secret values are masked in all this process writes
    (``strict_vault``: a master key that does not open the vault is an error, for
    commands that run agents; ``pool``: see ``Store.open``)."""
    store = Store.open(database_url(repo.root), pool=pool)
    try:
        install_redaction(store, state_dir(repo.root), strict=strict_vault)
        yield store
    finally:
        store.close()


def discover_repo(path: Path) -> Repository:
    """The repository at or above ``path``; queue commands need no capataz.toml."""
    return Repository.discover(path.resolve())


class _Discard(io.StringIO):
    """A sink that only counts: export_audit tells how many entries it wrote."""

    def write(self, s: str) -> int:
        return len(s)


@audit_app.command("verify")
def audit_verify_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Recompute the hash chain; exit 1 naming the first entry that was edited, deleted,
    inserted or reordered."""
    with opened_store(discover_repo(repo_path)) as store:
        fault = store.audit.verify()
        count = store.audit.export(_Discard())
    if as_json:
        data = {
            "ok": fault is None,
            "entries": count,
            "first_bad_entry": fault.seq if fault else None,
            "reason": fault.reason if fault else None,
        }
        out.print_json(json.dumps(data))
        if fault is not None:
            raise typer.Exit(1)
        return
    if fault is not None:
        raise AuditBrokenError(
            f"audit trail broken at entry {fault.seq}: {fault.reason}",
            fix=f"entries from {fault.seq} on cannot be trusted; compare with an earlier "
            "`capataz audit export` or restore the database from a backup",
        )
    out.print(f"[green]✓[/] audit trail intact ({count} entries)")


@audit_app.command("export")
def audit_export_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (default: standard output)."),
    ] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Write every audit entry as one JSON object per line (JSON Lines), oldest first,
    with its hash, so the copy can be verified and kept where the database cannot
    rewrite it."""
    with opened_store(discover_repo(repo_path)) as store:
        if output is None:
            _export_to_stdout(store)
            return
        count = _export_to_file(store, output)
    out.print(
        f"[green]✓[/] exported {count} audit entries to {escape(str(output))}", highlight=False
    )


def _export_to_stdout(store: Store) -> None:
    # UTF-8 whatever the locale: entries keep non-ASCII text as it is.
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
    try:
        store.audit.export(stream)
    finally:
        stream.flush()
        stream.detach()


def _export_to_file(store: Store, output: Path) -> int:
    """Write next to ``output`` and rename, so a failed export never leaves a truncated
    file that looks like a complete one."""
    target = output.resolve()
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise CapatazError(
            f"cannot write {output}: {exc.strerror or exc}",
            fix="choose a file in an existing, writable directory",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            count = store.audit.export(file)
        Path(temp).replace(target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return count


@db_app.command("upgrade")
def db_upgrade_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Apply the schema migrations this capataz ships (commands also do it on start)."""
    url = database_url(discover_repo(repo_path).root)
    engine = create_engine_for(url)
    try:  # a database that cannot be opened raises one StoreError line
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if as_json:
        out.print_json(
            json.dumps({"database": redacted_url(url), "from": before, "revision": after})
        )
        return
    change = "already up to date" if before == after else f"upgraded from {before or 'empty'}"
    out.print(f"[green]✓[/] database at revision {after} ({change})", highlight=False)
    out.print(f"  {redacted_url(url)}", highlight=False, markup=False)
