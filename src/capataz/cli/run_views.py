"""`capataz run list/show` and `capataz metrics`: what the queue has done, as the runbook
reads it (docs/runbook.md)."""

from __future__ import annotations

import dataclasses
import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import discover_repo, opened_store
from capataz.cli.console import out, shown
from capataz.cli.live import usage_text
from capataz.cli.options import JsonOption, RepoOption
from capataz.redaction import redact
from capataz.store import Store
from capataz.units import format_bytes, format_seconds
from capataz.visible import visible

run_app = typer.Typer(help="Runs: one attempt of a task each.", no_args_is_help=True)
app.add_typer(run_app, name="run")


def _store(repo_path: Path) -> AbstractContextManager[Store]:
    return opened_store(discover_repo(repo_path))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _json(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps([_plain(v) for v in value], default=str)
    return json.dumps(_plain(value), default=str)


@run_app.command("list")
def list_command(
    task: Annotated[str | None, typer.Option("--task", help="Only this task's runs.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="failed, running, succeeded, escalated, cancelled, lost, released, or "
            "finished (docs/runbook.md)",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Newest runs first."""
    with _store(repo_path) as store:
        runs = store.runs.list(task_id=task, status=status, limit=limit)
    if as_json:
        out.print_json(_json(runs))
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("run", "task", "attempt", "status", "outcome", "runner", "started", "wall"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.id,
            run.task_id,
            str(run.attempt),
            run.status,
            run.outcome or "-",
            run.runner_id or "-",
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            format_seconds(run.wall_seconds),
        )
    out.print(table)


@run_app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="A run id from `capataz run list`.")],
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """One run: steps, file changes, violations, decision, resources and its log's tail."""
    with _store(repo_path) as store:
        run = store.runs.get(run_id)
    if as_json:
        out.print_json(_json(run))
        return
    head = Table.grid(padding=(0, 2))
    head.add_row("run", f"{run.id} (task {run.task_id}, attempt {run.attempt})")
    head.add_row("status", shown(f"{run.status} / {run.outcome or '-'}"))
    head.add_row("decision", shown(f"{run.decision or '-'} — {run.reason or ''}"))
    head.add_row(
        "agent",
        f"exit {run.exit_code}, wall {format_seconds(run.wall_seconds)}, "
        f"cpu {format_seconds(run.cpu_seconds)}, "
        f"peak {format_bytes(run.peak_memory_bytes)}",
    )
    if run.tokens_in is not None or run.tokens_out is not None:
        used = usage_text(run.tokens_in, run.tokens_out, run.cost_usd, run.model, run.turns)
        head.add_row("usage", shown(f"{run.agent}: {used}"))
    out.print(head)
    steps = Table(title="steps", title_justify="left")
    for column in ("phase", "started", "ended", "outcome"):
        steps.add_column(column)
    for step in run.steps:
        steps.add_row(
            step.phase,
            f"{step.started_at:%H:%M:%S.%f}"[:-3],
            f"{step.ended_at:%H:%M:%S.%f}"[:-3] if step.ended_at else "-",
            step.outcome or "-",
        )
    out.print(steps)
    if run.file_changes:
        files = Table(title="file changes", title_justify="left")
        for column in ("path", "change", "+", "-"):
            files.add_column(column)
        for change in run.file_changes:
            files.add_row(
                shown(change["path"]),
                str(change["kind"]),
                str(change["lines_added"]),
                str(change["lines_removed"]),
            )
        out.print(files)
    if run.violations:
        table = Table(title="violations", title_justify="left")
        for column in ("severity", "type", "where", "details"):
            table.add_column(column)
        for v in run.violations:
            where = f"{v.get('file') or v.get('gate')}" + (f":{v['line']}" if v.get("line") else "")
            table.add_row(str(v["severity"]), str(v["type"]), shown(where), shown(v["details"]))
        out.print(table)
    if run.log_tail:
        out.rule("log (tail)")
        out.print(Text(visible(redact(run.log_tail[-4000:]), newlines=True)))


@app.command("metrics")
def metrics_command(as_json: JsonOption = False, repo_path: RepoOption = Path()) -> None:
    """Tasks per status, runners online, fail_rate_last_20, oldest_ready_age_seconds,
    tokens and cost by agent, and the planner's calls, tokens and cost."""
    with _store(repo_path) as store:
        metrics = store.metrics()
    if as_json:
        out.print_json(json.dumps(metrics, default=str))
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for state, count in metrics["tasks"].items():
        table.add_row(f"tasks.{state}", str(count))
    table.add_row("runners.online", str(metrics["runners"]["online"]))
    table.add_row("runners.offline", str(metrics["runners"]["offline"]))
    table.add_row("runs.fail_rate_last_20", f"{metrics['runs']['fail_rate_last_20']:.2f}")
    age = metrics["backlog"]["oldest_ready_age_seconds"]
    table.add_row("backlog.oldest_ready_age_seconds", "-" if age is None else f"{age:.0f}")
    for agent, used in metrics.get("usage", {}).items():
        name = visible(redact(agent))
        table.add_row(Text(f"usage.{name}.tokens_in"), str(used["tokens_in"]))
        table.add_row(Text(f"usage.{name}.tokens_out"), str(used["tokens_out"]))
        cost = used["cost_usd"]
        table.add_row(Text(f"usage.{name}.cost_usd"), "-" if cost is None else f"{cost:.4f}")
        table.add_row(Text(f"usage.{name}.runs"), str(used["runs"]))
    planner = metrics["planner"]
    if planner["calls"]:
        table.add_row("planner.calls", str(planner["calls"]))
        table.add_row("planner.failed", str(planner["failed"]))
        table.add_row("planner.tokens_in", str(planner["tokens_in"]))
        table.add_row("planner.tokens_out", str(planner["tokens_out"]))
        cost = planner["cost_usd"]
        table.add_row("planner.cost_usd", "-" if cost is None else f"{cost:.4f}")
    out.print(table)
