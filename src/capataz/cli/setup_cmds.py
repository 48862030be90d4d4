"""`capataz init`, `doctor` and `demo`."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from capataz.agents.commands import resolve_agent
from capataz.cli import app
from capataz.cli.admin_cmds import opened_store
from capataz.cli.console import err, out
from capataz.cli.live import LiveView, render_summary
from capataz.cli.options import JsonOption, RepoOption
from capataz.config import Config, load_config
from capataz.errors import CapatazError, GitError
from capataz.setup.agent_doctor import StoredNames, doctor_agent
from capataz.setup.demo import DEMO_TASKS, create_demo_repo, run_demo_task
from capataz.setup.doctor import run_doctor
from capataz.setup.initialize import init_project
from capataz.setup.probes import ProbeResult, run_probes
from capataz.workspace.repo import Repository


@app.command("init")
def init_command(
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing capataz.toml.")
    ] = False,
    agents: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            help="Add an agent of this preset (claude-code, codex, aider) and its "
            "credential request; repeatable. Without it, presets found on PATH are offered "
            "as comments.",
        ),
    ] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Write a commented capataz.toml and ignore .capataz/ in git."""
    repo = Repository.discover(repo_path.resolve())
    for line in init_project(repo, force=force, agents=agents or ()):
        out.print(f"[green]✓[/] {escape(line)}")
    out.print('Next: [bold]capataz doctor[/], then [bold]capataz exec "<instruction>"[/].')


@app.command("doctor")
def doctor_command(
    as_json: JsonOption = False,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also run the escape probes in your sandbox and print a containment table.",
        ),
    ] = False,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Check this agent instead: its command and interpreters are visible in the "
            "sandbox, its --version runs there, its endpoint is reachable, its credentials "
            "are in the vault.",
        ),
    ] = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Check git, Python and that the sandbox really starts and really has no network
    (with --agent: that one agent, as docs/agents.md describes)."""
    if agent is not None:
        _doctor_agent(agent, repo_path, as_json=as_json)
        return
    config, problem = Config(), None
    try:
        config = load_config(Repository.discover(repo_path.resolve()).root)
    except GitError:
        pass  # outside a repository: check the machine with defaults
    except CapatazError as exc:
        problem = str(exc)
    checks = run_doctor(config, problem)
    probes = _probe(config) if probe and all(c.ok for c in checks) else []
    if as_json:  # a list of checks, as always; with --probe, the probes beside them
        found = [c.__dict__ for c in checks]
        data = {"checks": found, "probes": [p.__dict__ for p in probes]} if probe else found
        out.print_json(json.dumps(data))
    else:
        table = Table(show_header=True, header_style="bold")
        for column in ("", "check", "result", "fix"):
            table.add_column(column)
        for check in checks:
            table.add_row(
                "[green]✓[/]" if check.ok else "[red]✗[/]",
                check.name,
                Text(check.detail),
                Text(check.fix),
            )
        out.print(table)
        if probes:
            out.print(_containment_table(probes))
    if not all(c.ok for c in checks) or not all(p.contained for p in probes):
        raise typer.Exit(1)


def _doctor_agent(name: str, repo_path: Path, *, as_json: bool) -> None:
    """One line per check, a fix under each problem; exit 1 when there is one. An
    unknown agent is a one-line error (exit 2) naming the known ones."""
    try:
        repo: Repository | None = Repository.discover(repo_path.resolve())
    except GitError:
        repo = None  # outside a repository: the defaults' agents, and no vault
    config = load_config(repo.root) if repo is not None else Config()
    stored = _stored_names(repo) if repo is not None else None
    checks = doctor_agent(config, name, repo=repo, stored=stored)
    if as_json:
        out.print_json(json.dumps([c.__dict__ for c in checks]))
    else:
        for check in checks:
            mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
            out.print(f"{mark} {escape(check.name)}: {escape(check.detail)}", soft_wrap=True)
            if not check.ok and check.fix:
                out.print(f"    fix: {escape(check.fix)}", soft_wrap=True, highlight=False)
        problems = sum(not c.ok for c in checks)
        out.print(
            f"agent {escape(name)}: "
            + (f"{problems} problem(s)" if problems else f"all {len(checks)} checks pass"),
            highlight=False,
        )
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _stored_names(repo: Repository) -> StoredNames:
    """Which of some secret names the repository's vault holds (rows only, no key)."""

    def names(wanted: Sequence[str]) -> Collection[str]:
        with opened_store(repo) as store:
            return {row.name for row in store.secrets.rows(wanted)}

    return names


def _probe(config: Config) -> list[ProbeResult]:
    agent = resolve_agent(config, config.project.default_agent)
    if sys.stderr.isatty():
        with err.status("running the escape probes in your sandbox…"):
            return run_probes(config, agent)
    return run_probes(config, agent)


def _containment_table(probes: list[ProbeResult]) -> Table:
    table = Table(title="containment", title_justify="left", header_style="bold")
    for column in ("", "probe", "what an agent tried", "result"):
        table.add_column(column)
    for found in probes:
        table.add_row(
            "[green]✓[/]" if found.contained else "[red]ESCAPED[/]",
            found.name,
            Text(found.attempt),
            Text(found.detail),
        )
    return table


@app.command("demo")
def demo_command(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create the demo repository.")
    ] = None,
) -> None:
    """Show every outcome on a scratch repository in under a minute."""
    where = directory or Path(tempfile.mkdtemp(prefix="capataz-demo-"))
    repo = create_demo_repo(where)
    out.rule("[bold]capataz demo")
    out.print(f"scratch repository: {repo.root}\n")
    results = []
    for task in DEMO_TASKS:
        out.rule(f"{task.task_id}: {task.title}")
        out.print(f"[dim]$ capataz exec {json.dumps(task.instruction)}[/]")
        with LiveView(f"{task.task_id}", interactive=False) as view:
            report = run_demo_task(repo, task, view)
        render_summary(report)
        results.append((task, report))
    table = Table(title="demo results", show_header=True, header_style="bold")
    for column in ("task", "outcome", "expected", "why"):
        table.add_column(column)
    for task, report in results:
        ok = report.outcome is task.expected
        table.add_row(
            task.task_id,
            report.outcome.value,
            ("[green]" if ok else "[red]") + task.expected.value,
            Text(report.reason),
        )
    out.print(table)
    out.print(
        f"Evidence: {repo.root}/.capataz/progress/<task-id>/ — "
        f"try `git -C {repo.root} log --oneline`"
    )
    if not all(report.outcome is task.expected for task, report in results):
        raise typer.Exit(1)
