"""`capataz task add|import|list|show|cancel|requeue`: the durable queue from a shell.

Each command parses, asks :class:`~capataz.store.Store`, and formats: a Rich table or
line for people, ``--json`` for programs. Whatever the store refuses (unknown task,
unknown dependency, cycle, a state that does not allow the change) arrives as a
CapatazError and is printed by ``main()`` as one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import cli_actor, discover_repo, opened_store
from capataz.cli.console import out, shown
from capataz.cli.console import table as console_table
from capataz.cli.options import BudgetOption, JsonOption, RepoOption
from capataz.cli.project import open_project
from capataz.errors import TaskError
from capataz.intake.taskfile import load_taskfile, to_specs
from capataz.intake.tasks import TaskRequest, prepare, submit
from capataz.store import Task, TaskState, task_json
from capataz.units import parse_duration

__all__ = ["task_json"]

TaskIdArgument = Annotated[str, typer.Argument(help="The task id (see `capataz task list`).")]

task_app = typer.Typer(
    name="task", help="Queue tasks for runners and manage the queue.", no_args_is_help=True
)
app.add_typer(task_app)

STATUS_STYLE = {
    TaskState.PENDING: "dim",
    TaskState.READY: "cyan",
    TaskState.RUNNING: "bold yellow",
    TaskState.DONE: "green",
    TaskState.FAILED: "bold red",
    TaskState.BLOCKED: "red",
    TaskState.ESCALATED: "bold magenta",
    TaskState.CANCELLED: "dim",
}


def _status(task: Task) -> Text:
    return Text(task.status.value, style=STATUS_STYLE[task.status])


def _parse_status(value: str) -> TaskState:
    try:
        return TaskState(value.strip().lower())
    except ValueError:
        valid = ", ".join(state.value for state in TaskState)
        raise TaskError(
            f"unknown status {value!r}; valid statuses: {valid}", fix="use one of those"
        ) from None


def _table() -> Table:
    """Compact tables: task ids are long, and 80 columns must still show the reason."""
    return console_table(compact=True)


def _option_names(index: int, field: str) -> str:
    """Fields as the options that set them; the instruction, agent and id messages
    name themselves."""
    if field in ("instruction", "agent", "id"):
        return ""
    return "--" + field.replace("_", "-")


@task_app.command("add")
def add_command(
    instruction: Annotated[str, typer.Argument(help="What the agent should do.")],
    title: Annotated[
        str | None, typer.Option(help="Short title (default: the instruction's first line).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="Agent name from capataz.toml.")
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", "-d", help="A task that must be done first (repeatable)."),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", "-p", help="Higher runs first.")] = 0,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="Attempts before the task fails.")
    ] = 3,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="Only runners with this label take it (repeatable)."),
    ] = None,
    run_after: Annotated[
        str | None,
        typer.Option(help="Not before this ISO time, or this long from now (10m, 2h)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Adding the same key again returns the existing task."),
    ] = None,
    allow_high: Annotated[
        bool,
        typer.Option("--allow-high", help="Escalate high-severity violations, not block."),
    ] = False,
    task_id: Annotated[str | None, typer.Option("--id", help="Task id (default: new).")] = None,
    budget: BudgetOption = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Queue one task; a runner picks it up when its dependencies are done."""
    repo, config = open_project(repo_path)
    request = TaskRequest(
        instruction=instruction,
        title=title,
        agent=agent,
        id=task_id,
        depends_on=depends_on or (),
        priority=priority,
        max_attempts=max_attempts,
        labels=labels or (),
        run_after=run_after,
        idempotency_key=idempotency_key,
        allow_high=allow_high,
        budget=budget,
    )
    prepared = prepare([request], config, names=_option_names)
    with opened_store(repo) as store:
        added = submit(store, prepared, actor=cli_actor())[0]
    task, created = added.task, added.created
    if as_json:
        out.print_json(json.dumps({**task_json(task), "created": created}))
        return
    line = Text.assemble(
        ("added " if created else "exists ", "bold green" if created else "bold yellow"),
        (task.id, "bold"),
        " ",
        _status(task),
        " ",
        shown(task.title),
    )
    out.print(line)
    if not created:
        out.print(
            Text(f"idempotency key {task.idempotency_key!r} already used; nothing added"),
            style="dim",
        )
    elif task.status is TaskState.PENDING:
        out.print(Text(f"waits for: {', '.join(task.depends_on)}", style="dim"))


@task_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Tasks as JSON (*.json) or YAML (*.yaml).")],
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Queue many tasks from a file, all or nothing. Tasks name each other in
    `depends_on` by their `name`; other entries there are ids of queued tasks."""
    repo, config = open_project(repo_path)
    prepared = to_specs(load_taskfile(file), config)
    with opened_store(repo) as store:
        rows = submit(store, prepared, actor=cli_actor())
    if as_json:
        data = [{"name": row.label, "created": row.created, **task_json(row.task)} for row in rows]
        out.print_json(json.dumps(data))
        return
    table = _table()
    table.add_column("name", overflow="fold")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("", style="dim")
    for row in rows:
        table.add_row(
            Text(row.label), row.task.id, _status(row.task), "" if row.created else "existing"
        )
    out.print(table)
    added = sum(1 for row in rows if row.created)
    out.print(f"[green]✓[/] {added} added, {len(rows) - added} already queued", highlight=False)


@task_app.command("list")
def list_command(
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="Only tasks in this state.")
    ] = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Tasks, oldest first, with their state and why they are in it."""
    state = _parse_status(status) if status is not None else None
    with opened_store(discover_repo(repo_path)) as store:
        tasks = store.tasks.list(state)
    if as_json:
        out.print_json(json.dumps([task_json(task) for task in tasks]))
        return
    if not tasks:
        what = f"{state.value} tasks" if state else "tasks"
        out.print(f"no {what}; add some with `capataz task add` or `capataz task import`")
        return
    table = _table()
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("prio", justify="right", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("agent", max_width=12)
    table.add_column("title", min_width=12, ratio=3)
    table.add_column("reason", min_width=8, ratio=2, style="dim", overflow="fold")
    for task in tasks:
        table.add_row(
            task.id,
            _status(task),
            str(task.priority),
            f"{task.attempts}/{task.max_attempts}",
            shown(task.agent),
            shown(task.title),
            shown(task.reason or ""),
        )
    out.print(table)


@task_app.command("show")
def show_command(
    task_id: TaskIdArgument, as_json: JsonOption = False, repo_path: RepoOption = Path()
) -> None:
    """Every field of one task, its dependencies included."""
    with opened_store(discover_repo(repo_path)) as store:
        task = store.tasks.get(task_id)
    if as_json:
        out.print_json(json.dumps(task_json(task)))
        return
    _print_task(task)


def _print_task(task: Task) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in task_json(task).items():
        if key == "status":
            cell: Text = _status(task)
        elif key == "budget":
            cell = shown(task.budget.describe() if task.budget else "- (the agent's default)")
        elif isinstance(value, list):
            cell = shown(", ".join(value) if value else "-")
        else:
            cell = shown("-" if value is None or value == "" else str(value))
        grid.add_row(key.replace("_", " "), cell)
    out.print(grid)


@task_app.command("cancel")
def cancel_command(
    task_id: TaskIdArgument,
    reason: Annotated[str | None, typer.Option(help="Why; kept with the task.")] = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Cancel a task that has not ended. A running one loses its lease at once; tasks
    that depend on it will not run."""
    with opened_store(discover_repo(repo_path)) as store:
        task = store.tasks.cancel(task_id, reason, actor=cli_actor())
    if as_json:
        out.print_json(json.dumps(task_json(task)))
        return
    out.print(Text.assemble(("cancelled ", "bold"), (task.id, "bold"), " — ", shown(task.reason)))


@task_app.command("requeue")
def requeue_command(
    task_id: TaskIdArgument,
    backoff: Annotated[
        str, typer.Option(help="Wait this long before it may run again (30s, 5m).")
    ] = "0s",
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Give a failed, blocked, cancelled or escalated task a fresh set of attempts."""
    try:
        seconds = parse_duration(backoff)
    except ValueError as exc:
        raise TaskError(f"--backoff: {exc}", fix="e.g. --backoff 30s") from None
    with opened_store(discover_repo(repo_path)) as store:
        task = store.tasks.requeue(task_id, seconds, actor=cli_actor())
    if as_json:
        out.print_json(json.dumps(task_json(task)))
        return
    when = f", not before {task.run_after.astimezone():%H:%M:%S}" if seconds else ""
    out.print(Text.assemble(("requeued ", "bold"), (task.id, "bold"), " ", _status(task), when))
