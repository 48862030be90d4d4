"""`capataz gc`: drop rejected results, stale workspaces and finished progress
directories older than an age, and say what that freed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capataz.cli import app
from capataz.cli.admin_cmds import discover_repo
from capataz.cli.console import out
from capataz.cli.options import JsonOption, RepoOption
from capataz.config import load_config
from capataz.errors import CapatazError
from capataz.units import format_bytes, format_seconds, parse_duration
from capataz.workspace.gc import GcReport, collect

__all__ = ["gc_command"]


@app.command("gc")
def gc_command(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Only what is older than this (e.g. 30d, 12h)."),
    ] = "30d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be freed; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Drop rejected results (.capataz/rejected.git), workspaces no running task uses and
    progress directories of finished tasks, when older than --older-than."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise CapatazError(
            f"--older-than {older_than!r} is not a duration",
            fix="write it like 30d, 12h or 90m",
        ) from exc
    repo = discover_repo(repo_path)
    progress_root = repo.root / load_config(repo.root).project.progress_dir
    report = collect(repo, progress_root, age, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps(report.as_json()))
        return
    _print(report)


def _print(report: GcReport) -> None:
    verb = "would free" if report.dry_run else "freed"
    out.print(
        f"capataz gc {verb}, older than {format_seconds(report.older_than)}:", highlight=False
    )
    table = Table()
    for column in ("kind", "count", "bytes"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, sums in report.totals().items():
        table.add_row(kind, str(sums["count"]), format_bytes(sums["bytes"]))
    out.print(table)
    for item in report.freed:
        out.print(
            f"  {item.kind:<9} {item.name}  {format_bytes(item.bytes)}",
            markup=False,
            highlight=False,
        )
    for kind, name, why in report.kept:
        out.print(f"  kept {kind} {name}: {why}", markup=False, highlight=False)
