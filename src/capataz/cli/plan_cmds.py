"""`capataz plan` and `capataz directive list|show|apply|reject`: the LLM planner from a
shell (docs/planner.md).

`plan` asks the configured model for directives and stores them (PENDING, or APPLIED
with ``[planner] auto_apply``; REJECTED with the reason when invalid); `directive
apply` queues a PENDING directive's tasks, `directive reject` refuses it. ``--json``
prints the runbook's shapes (the same as ``POST /ops/gpt/run`` and
``GET /ops/directives``). Every refusal is one line (exit 2), printed by ``main()``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, opened_store
from capataz.cli.console import out, shown
from capataz.cli.console import table as console_table
from capataz.cli.options import JsonOption, RepoOption
from capataz.cli.project import open_project
from capataz.errors import CapatazError
from capataz.planner import apply_directive, plan, planner_key, require_planner
from capataz.statedir import state_dir
from capataz.store import Directive, DirectiveStatus, directive_json, task_json

__all__: list[str] = []

DirectiveIdArgument = Annotated[
    str, typer.Argument(help="The directive id (see `capataz directive list`).")
]

directive_app = typer.Typer(
    name="directive",
    help="The planner's directives: list, show, apply or reject them.",
    no_args_is_help=True,
)
app.add_typer(directive_app)

STATUS_STYLE = {
    DirectiveStatus.PENDING: "cyan",
    DirectiveStatus.APPLIED: "green",
    DirectiveStatus.REJECTED: "red",
}


def _status(directive: Directive) -> Text:
    return Text(directive.status.value, style=STATUS_STYLE[directive.status])


def _table(*columns: str) -> Table:
    return console_table(*columns)


def _directives_table(directives: list[Directive]) -> Table:
    table = _table("id", "status", "tasks", "title", "reason")
    for d in directives:
        table.add_row(d.id, _status(d), str(len(d.tasks)), shown(d.title), shown(d.reason or ""))
    return table


@app.command("plan")
def plan_command(
    goal: Annotated[
        str | None, typer.Option("--goal", "-g", help="What the plan should achieve.")
    ] = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Ask the planner ([planner] in capataz.toml) for directives over this project's
    context and backlog, and store them for `capataz directive apply`."""
    repo, config = open_project(repo_path)
    require_planner(config)  # before a database is opened or created
    with opened_store(repo) as store:
        key = planner_key(store, config, state_dir(repo.root))
        result = plan(store, config, api_key=key, repo_root=repo.root, goal=goal, actor=cli_actor())
    if as_json:
        out.print_json(data=result.as_json())
        return
    if result.directives:
        out.print(_directives_table(result.directives))
    tokens = result.usage.get("total_tokens", "?")
    out.print(
        f"{len(result.directives)} directive(s), {result.tasks_created} task(s) queued "
        f"(model {result.model}, {tokens} tokens)",
        markup=False,
        highlight=False,
    )
    if any(d.status is DirectiveStatus.PENDING for d in result.directives):
        out.print("apply one with `capataz directive apply <id>`", style="dim")


def _parse_status(value: str | None) -> DirectiveStatus | None:
    if value is None:
        return None
    try:
        return DirectiveStatus(value.strip().upper())
    except ValueError:
        valid = ", ".join(status.value for status in DirectiveStatus)
        raise CapatazError(
            f"unknown directive status {value!r}", fix=f"use one of {valid}"
        ) from None


@directive_app.command("list")
def directive_list_command(
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="PENDING, APPLIED or REJECTED.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Directives, newest first."""
    chosen = _parse_status(status)
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        found = store.directives.list(chosen, limit=limit)
    if as_json:
        out.print_json(data=[directive_json(d) for d in found])
        return
    if not found:
        out.print("no directives; `capataz plan` asks the planner for some")
        return
    out.print(_directives_table(found))


@directive_app.command("show")
def directive_show_command(
    directive_id: DirectiveIdArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """One directive: why, its proposed tasks and what became of it."""
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        directive = store.directives.get(directive_id)
    if as_json:
        out.print_json(data=directive_json(directive))
        return
    _show(directive)


def _show(d: Directive) -> None:
    out.print(Text.assemble(Text(d.id, style="bold"), "  ", _status(d), "  ", shown(d.title)))
    if d.rationale:
        out.print(shown(d.rationale))
    if d.tasks:
        table = _table("name", "title", "agent", "depends on")
        for task in d.tasks:
            table.add_row(
                shown(task.name),
                shown(task.title),
                shown(task.agent or "(default)"),
                shown(", ".join(task.depends_on)),
            )
        out.print(table)
    facts = [("model", d.model), ("created", f"{d.created_at:%Y-%m-%d %H:%M:%S}")]
    if d.decided_at:
        facts.append(("decided", f"{d.decided_at:%Y-%m-%d %H:%M:%S} by {d.decided_by}"))
    if d.reason:
        facts.append(("reason", d.reason))
    if d.created_task_ids:
        facts.append(("tasks", ", ".join(d.created_task_ids)))
    for name, value in facts:
        out.print(Text.assemble(Text(f"{name}: ", style="bold"), shown(value)))
    if d.raw_answer:
        out.print(Text("raw answer (masked):", style="bold"))
        out.print(shown(d.raw_answer))


@directive_app.command("apply")
def directive_apply_command(
    directive_id: DirectiveIdArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """Queue a PENDING directive's tasks (all or none) and mark it APPLIED."""
    repo, config = open_project(repo_path)
    with opened_store(repo) as store:
        directive, created = apply_directive(store, config, directive_id, actor=cli_actor())
    if as_json:
        out.print_json(
            data={**directive_json(directive), "created_tasks": [task_json(t) for t in created]}
        )
        return
    out.print(f"[green]✓[/] directive {directive.id} applied: {len(created)} task(s) queued")
    table = _table("id", "status", "title", "depends on")
    for task in created:
        table.add_row(task.id, task.status.value, shown(task.title), ", ".join(task.depends_on))
    out.print(table)


@directive_app.command("reject")
def directive_reject_command(
    directive_id: DirectiveIdArgument,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why it is refused.")],
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Refuse a PENDING directive; none of its tasks is queued."""
    repo, _ = open_project(repo_path)
    with opened_store(repo) as store:
        directive = store.directives.reject(directive_id, reason, actor=cli_actor())
    if as_json:
        out.print_json(data=directive_json(directive))
        return
    out.print(
        Text.assemble(
            Text("✗ ", style="red"), f"directive {directive.id} rejected: ", shown(reason)
        )
    )
