"""`capataz prd import|status|tick`: a PRD's acceptance criteria as tasks, how far they
have got, and their checklists ticked once their tasks are done.

The commands only parse, call :mod:`capataz.prd` / :mod:`capataz.intake.prd_plan`
and format; a PRD that cannot be imported is a :class:`~capataz.prd.PrdError`
printed by ``main()`` as one line (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, discover_repo, opened_store
from capataz.cli.console import err, out, shown
from capataz.cli.console import table as console_table
from capataz.cli.options import JsonOption, RepoOption
from capataz.cli.project import open_project
from capataz.cli.task_cmds import STATUS_STYLE
from capataz.intake.prd_plan import key_prefix, prd_status, prepare_prd, to_tick
from capataz.intake.tasks import PreparedTask, submit
from capataz.prd import Prd, PrdError, load_prd, parse_prd
from capataz.prd.branch import tick_on_branch
from capataz.store import task_json
from capataz.workspace.landing import read_file

__all__: list[str] = []

PrdArgument = Annotated[Path, typer.Argument(help="The PRD, a markdown file in the repository.")]

prd_app = typer.Typer(
    name="prd",
    help="Queue a PRD's acceptance criteria as tasks and follow them.",
    no_args_is_help=True,
)
app.add_typer(prd_app)


def _table() -> Table:
    return console_table(compact=True)


def _waits(depends_on: tuple[str, ...]) -> str:
    return ", ".join(depends_on) if depends_on else "-"


@prd_app.command("import")
def import_command(
    file: PrdArgument,
    agent: Annotated[
        str | None,
        typer.Option("--agent", "-a", help="Agent for every task (default: the project's)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the tasks it would queue; write nothing.")
    ] = False,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Queue one task per acceptance criterion, each after the criteria it depends on
    (by default the one before it). Importing the same PRD again adds only criteria
    that are new."""
    repo, config = open_project(repo_path)
    prd = load_prd(file)
    prefix = key_prefix(repo.root, file)
    prepared = prepare_prd(prd, config, prefix=prefix, agent=agent)
    if dry_run:
        _print_plan(prd, prepared, as_json=as_json)
        return
    with opened_store(repo) as store:
        rows = submit(store, prepared, actor=cli_actor())
    if as_json:
        data = [
            {
                "ac": row.label,
                "created": row.created,
                "checklist": len(prd.criterion(row.label).items),
                **task_json(row.task),
            }
            for row in rows
        ]
        out.print_json(json.dumps(data))
        return
    table = _table()
    table.add_column("AC", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("title", overflow="fold")
    table.add_column("", style="dim", no_wrap=True)
    for row in rows:
        table.add_row(
            row.label,
            row.task.id,
            Text(row.task.status.value, style=STATUS_STYLE[row.task.status]),
            shown(prd.criterion(row.label).title),
            "added" if row.created else "already queued",
        )
    out.print(table)
    added = sum(1 for row in rows if row.created)
    out.print(
        f"[green]✓[/] {added} added, {len(rows) - added} already queued",
        highlight=False,
    )


def _print_plan(prd: Prd, prepared: list[PreparedTask], *, as_json: bool) -> None:
    if as_json:
        data: list[dict[str, Any]] = [
            {
                "ac": ac.id,
                "title": item.spec.title,
                "depends_on": list(ac.depends_on),
                "checklist": len(ac.items),
                "checked": ac.checked,
                "agent": item.spec.agent,
                "labels": list(item.spec.labels),
                "idempotency_key": item.spec.idempotency_key,
                "instruction": item.spec.instruction,
            }
            for ac, item in zip(prd.criteria, prepared, strict=True)
        ]
        out.print_json(json.dumps(data))
        return
    table = _table()
    table.title = Text(f"{prd.title}: {len(prd.criteria)} tasks (dry run)", style="bold")
    table.add_column("AC", no_wrap=True)
    table.add_column("title", overflow="fold")
    table.add_column("depends on", no_wrap=True)
    table.add_column("checklist", justify="right", no_wrap=True)
    for ac in prd.criteria:
        table.add_row(ac.id, shown(ac.title), _waits(ac.depends_on), str(len(ac.items)))
    out.print(table)
    out.print("nothing written; run without --dry-run to queue these tasks", style="dim")


@prd_app.command("status")
def status_command(
    file: PrdArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """Each acceptance criterion: its task, the task's state, and how many of its
    checklist items the file has ticked."""
    repo = discover_repo(repo_path)
    prd = load_prd(file)
    prefix = key_prefix(repo.root, file)
    with opened_store(repo) as store:
        rows = prd_status(store, prd, prefix)
    if as_json:
        data = [
            {
                "ac": row.criterion.id,
                "title": row.criterion.title,
                "idempotency_key": row.key,
                "task_id": row.task.id if row.task else None,
                "status": row.task.status.value if row.task else None,
                "checked": row.criterion.checked,
                "total": len(row.criterion.items),
            }
            for row in rows
        ]
        out.print_json(json.dumps(data))
        return
    table = _table()
    table.title = Text(prd.title, style="bold")
    table.add_column("AC", no_wrap=True)
    table.add_column("title", overflow="fold")
    table.add_column("task", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("checked", justify="right", no_wrap=True)
    for row in rows:
        ac, task = row.criterion, row.task
        status = (
            Text(task.status.value, style=STATUS_STYLE[task.status])
            if task
            else Text("not imported", style="dim")
        )
        checked = f"{ac.checked}/{len(ac.items)}"
        table.add_row(ac.id, shown(ac.title), task.id if task else "-", status, checked)
    out.print(table)
    if not any(row.task for row in rows):
        out.print(f"nothing imported yet; run `capataz prd import {file}`", style="dim")


@prd_app.command("tick")
def tick_command(
    file: PrdArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """Tick the checklist of every criterion whose task is done, in the PRD as
    committed on the target branch, as one capataz commit there. A run that lands ticks
    its own criterion; this catches up on those it could not. Your checkout of that
    branch moves with it only if it is clean; otherwise nothing is committed (exit 1)."""
    repo, config = open_project(repo_path)
    prefix = key_prefix(repo.root, file)
    source = prefix.removeprefix("prd:").removesuffix("#")
    branch = config.project.target_branch
    text = read_file(repo, branch, source)
    if text is None:
        raise PrdError(
            f"{source}: not on branch {branch} (or not UTF-8)",
            fix=f"commit the PRD on {branch} first; capataz ticks it there",
        )
    prd = parse_prd(text, path=Path(source))
    with opened_store(repo) as store:
        done = to_tick(prd_status(store, prd, prefix))
    result = None
    if done:
        message = f"prd: tick {', '.join(done)} in {source} (their tasks are done)"
        result = tick_on_branch(repo, branch, source, done, message)
    refused = result.refused if result is not None else None
    commit = result.commit if result is not None else None
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ticked": done if commit else [],
                    "commit": commit,
                    "branch": branch,
                    "refused": refused,
                }
            )
        )
    elif commit:
        out.print(
            f"[green]✓[/] ticked {', '.join(done)} on {branch} as {commit[:12]}", highlight=False
        )
    elif not refused:
        out.print("nothing to tick: no criterion with a done task has unticked items")
    if refused:
        err.print(Text.assemble(("not ticked: ", "bold red"), shown(refused)))
        raise typer.Exit(1)
