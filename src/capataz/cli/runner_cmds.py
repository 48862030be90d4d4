"""`capataz runner run|start|stop|status|logs`."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from capataz.cli import app
from capataz.cli.admin_cmds import opened_store
from capataz.cli.console import err, out
from capataz.cli.context import open_project, warn_unsandboxed
from capataz.runner import Runner
from capataz.runner.daemon import daemon_files, is_alive, read_pid, start_daemon, stop_daemon, tail
from capataz.store import Store, database_url
from capataz.store.records import RunnerInfo

runner_app = typer.Typer(
    help="Runner daemons: claim queued tasks and run them.", no_args_is_help=True
)
app.add_typer(runner_app, name="runner")

RepoOption = Annotated[Path, typer.Option("--repo", "-C", help="The repository (default: here).")]
NameOption = Annotated[
    str | None, typer.Option("--name", help="Runner name (and pid-file suffix).")
]


@runner_app.command("run")
def run_command(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, max=64)] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Only tasks with these labels.")
    ] = None,
    name: NameOption = None,
    max_tasks: Annotated[
        int | None, typer.Option("--max-tasks", min=1, help="Stop after N tasks.")
    ] = None,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop when nothing is left.")
    ] = False,
    repo_path: RepoOption = Path(),
) -> None:
    """Run in the foreground until SIGTERM/SIGINT (which lets running tasks finish)."""
    repo, config = open_project(repo_path)
    warn_unsandboxed(config)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    store = _open_with_retry(database_url(repo.root))
    runner = Runner(
        repo,
        config,
        store,
        name=name,
        concurrency=concurrency,
        labels=label,
        max_tasks=max_tasks,
        exit_when_idle=exit_when_idle,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: runner.shutdown(signal.Signals(signum).name))
    try:
        runner.run()
    finally:
        store.close()


@runner_app.command("start")
def start_command(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, max=64)] = None,
    label: Annotated[list[str] | None, typer.Option("--label")] = None,
    name: NameOption = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Start a runner in the background (pid and log files under .capataz/)."""
    repo, _ = open_project(repo_path)
    args = [
        *(["--concurrency", str(concurrency)] if concurrency else []),
        *[part for value in label or [] for part in ("--label", value)],
        *(["--name", name] if name else []),
    ]
    files = daemon_files(repo.root, name)
    pid = start_daemon(repo.root, files, args)
    out.print(f"Runner daemon started (PID {pid})")
    out.print(f"  DB:   {_redacted(database_url(repo.root))}")
    out.print(f"  Logs: {files.log}")
    out.print(f"  PID:  {files.pid}")


@runner_app.command("stop")
def stop_command(
    name: NameOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before SIGKILL.")] = 60.0,
    repo_path: RepoOption = Path(),
) -> None:
    """Ask the background runner to stop (running tasks finish within its grace period)."""
    repo, _ = open_project(repo_path)
    pid = stop_daemon(daemon_files(repo.root, name), timeout)
    out.print(f"Runner daemon stopped (PID {pid})")


@runner_app.command("status")
def status_command(
    name: NameOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    repo_path: RepoOption = Path(),
) -> None:
    """The local daemon's process, and every runner the queue has seen."""
    repo, _ = open_project(repo_path)
    files = daemon_files(repo.root, name)
    pid = read_pid(files)
    with opened_store(repo) as store:
        runners = store.list_runners()
    if as_json:
        data = {
            "daemon": {"pid": pid, "alive": is_alive(pid)},
            "runners": [_runner_json(r) for r in runners],
        }
        out.print_json(json.dumps(data, default=str))
        return
    state = f"running (PID {pid})" if is_alive(pid) else "not running"
    out.print(f"local daemon: {state}")
    table = Table(show_header=True, header_style="bold")
    for column in ("runner", "name", "status", "last seen", "tasks", "labels"):
        table.add_column(column)
    for r in runners:
        status = "[green]online[/]" if r.online else "[dim]offline[/]"
        table.add_row(
            r.id,
            Text(r.name),
            status,
            _ago(r.last_seen_at),
            Text(", ".join(r.current_tasks) or "-"),
            Text(", ".join(r.labels) or "-"),
        )
    out.print(table)


@runner_app.command("logs")
def logs_command(
    name: NameOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    repo_path: RepoOption = Path(),
) -> None:
    """The last lines of the background runner's log (--follow to keep reading)."""
    repo, _ = open_project(repo_path)
    path = daemon_files(repo.root, name).log
    if not path.exists():
        err.print(f"no log yet at {path}")
        raise typer.Exit(1)
    for line in tail(path, lines):
        out.print(Text(line.rstrip("\n")))
    if follow:
        with path.open(encoding="utf-8", errors="replace") as handle:
            handle.seek(0, 2)
            while True:
                line = handle.readline()
                if line:
                    out.print(Text(line.rstrip("\n")))
                else:
                    time.sleep(0.2)


def _open_with_retry(url: str, patience: float = 120.0) -> Store:
    """A runner starting while the database is briefly unreachable (or, on SQLite, write-
    locked by another process) waits for it instead of dying: it is a daemon."""
    import sqlalchemy.exc

    deadline, delay = time.monotonic() + patience, 0.5
    while True:
        try:
            return Store.open(url)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            first = (str(exc).splitlines() or ["?"])[0][:200]
            logging.getLogger("capataz.runner").warning(
                "database unavailable (%s); retrying in %.1f s", first, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _runner_json(r: RunnerInfo) -> dict[str, object]:
    return dataclasses.asdict(r)


def _ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _redacted(url: str) -> str:
    """A database URL without its password (it may be shown on screen or in a log)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
