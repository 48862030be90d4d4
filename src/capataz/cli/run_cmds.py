"""`capataz exec`, `decide` and `resume`: run one task now and answer its escalations."""

from __future__ import annotations

import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from capataz.agents.commands import resolve_agent
from capataz.agents.presets import with_presets
from capataz.cli import app
from capataz.cli.console import err, out
from capataz.cli.live import LiveView, render_summary, report_json
from capataz.cli.options import BudgetOption, JsonOption, RepoOption
from capataz.cli.project import open_project, warn_unsandboxed
from capataz.config import Config
from capataz.errors import Interrupted
from capataz.intake.tasks import parse_task_budget
from capataz.names import validate_task_id
from capataz.pipeline.escalation import submit_decision
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.supervisor import RunReport, RunSpec, Supervisor
from capataz.secrets.delivery import SecretDelivery
from capataz.workspace.repo import Repository


def _new_task_id() -> str:
    return f"t-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@app.command("exec")
def exec_command(
    instruction: Annotated[str, typer.Argument(help="What the agent should do.")],
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="Agent name from capataz.toml.")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--id", help="Task id (default: generated).")
    ] = None,
    title: Annotated[str, typer.Option(help="Short title for commits and reports.")] = "",
    allow_high: Annotated[
        bool | None,
        typer.Option(
            "--allow-high/--no-allow-high",
            help="Escalate high-severity violations instead of blocking.",
        ),
    ] = None,
    budget: BudgetOption = None,
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Run one task now: sandboxed agent, gates, decision, land or roll back."""
    repo, config = open_project(repo_path)
    warn_unsandboxed(config)
    spec = RunSpec(
        task_id=validate_task_id(task_id or _new_task_id()),
        instruction=instruction,
        agent=agent or config.project.default_agent,
        title=title,
        allow_high=allow_high,
        budget=parse_task_budget(budget, "--budget"),
    )
    resolve_agent(config, spec.agent)  # before the live view starts: errors stay one line
    SecretDelivery(with_presets(config), repo.root).prepare(spec.agent)  # one still WAITING
    _run(f"{spec.task_id} · {spec.agent}", as_json, lambda s: s.execute(spec), repo, config)


@app.command("resume")
def resume_command(
    task_id: Annotated[str, typer.Argument(help="A task answered with `modify`.")],
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Commit a human's edits to a modified task, re-run its post-gates and decide again."""
    repo, config = open_project(repo_path)
    warn_unsandboxed(config)
    _run(f"{task_id} · resume", as_json, lambda s: s.resume(task_id), repo, config)


@app.command("decide")
def decide_command(
    task_id: Annotated[str, typer.Argument(help="The escalated task.")],
    choice: Annotated[str, typer.Argument(help="approve, reject, modify or abort.")],
    note: Annotated[str, typer.Option(help="Why; kept with the decision.")] = "",
    repo_path: RepoOption = Path(),
) -> None:
    """Answer an escalated task from another shell."""
    repo, config = open_project(repo_path)
    progress = ProgressDir(repo.root / config.project.progress_dir, validate_task_id(task_id))
    submit_decision(progress, choice, note=note, decided_by="cli")
    out.print(f"[green]recorded[/] {choice.lower()} for {task_id}; the waiting run picks it up.")


@contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt the run like Ctrl-C, so it rolls back the same way.

    Only the first one interrupts: a second signal arriving while the rollback runs is
    ignored, so the rollback itself is never cut short. A signal capataz was started
    with ignored stays ignored, as POSIX has it: under ``nohup`` a closed terminal must
    not roll the run back (Python itself leaves SIGINT alone when it starts ignored,
    as it does for a background job of a script)."""
    received: list[str] = []

    def interrupt(number: int, _frame: object) -> None:
        if received:
            return
        received.append(signal.Signals(number).name)
        raise Interrupted(received[0], number)

    previous = {
        s: signal.signal(s, interrupt)
        for s in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        yield
    except Interrupted as exc:  # the pipeline rolled back; say so in one line
        err.print(f"[bold red]{exc.signal_name}:[/] stopped; the task was rolled back")
        raise typer.Exit(exc.exit_code) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run(
    title: str,
    as_json: bool,
    action: Callable[[Supervisor], RunReport],
    repo: Repository,
    config: Config,
) -> None:
    """Run with the live view (or quietly, for --json), print the result, set the exit code.
    The terminal answers escalations only when a person is at it."""
    interactive = sys.stdin.isatty() and not as_json
    terminal = sys.stdin if interactive else None
    with interrupted_by_signals():
        if as_json:
            report = action(Supervisor(repo, config, terminal=terminal))
            out.print_json(report_json(report))
        else:
            with LiveView(title, interactive=interactive) as view:
                report = action(Supervisor(repo, config, listener=view, terminal=terminal))
            render_summary(report)
    if report.outcome.exit_code:
        raise typer.Exit(report.outcome.exit_code)
