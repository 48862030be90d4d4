"""`capataz runner run|start|stop|status|logs`.

A runner works on the database (``CAPATAZ_DATABASE_URL`` or ``.capataz/capataz.db``)
or, with ``--server URL``, through the control plane of ``capataz serve`` with a runner
token. The token is read from ``CAPATAZ_TOKEN`` or ``--token-file`` (``--token`` works
too, but arguments are visible to every user in ``ps``); it is never printed or logged,
and ``runner start`` hands it to the daemon through its environment, not its arguments."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
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
from capataz.cli.options import JsonOption, RepoOption
from capataz.cli.project import open_project, warn_unsandboxed
from capataz.errors import CapatazError, QueueUnavailable
from capataz.retry import retry
from capataz.runner import Runner
from capataz.runner.daemon import daemon_files, is_alive, read_pid, start_daemon, stop_daemon, tail
from capataz.runner.remote import NEEDS_RUNNER_ROLE, RemoteQueue
from capataz.secrets.vault import install_redaction
from capataz.statedir import state_dir
from capataz.store import Store, database_url
from capataz.store.records import RunnerInfo

runner_app = typer.Typer(
    help="Runner daemons: claim queued tasks and run them.", no_args_is_help=True
)
app.add_typer(runner_app, name="runner")

NameOption = Annotated[
    str | None, typer.Option("--name", help="Runner name (and pid-file suffix).")
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="CAPATAZ_SERVER",
        help="Work through this control plane (`capataz serve`, http://host:port) "
        "instead of the database.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CAPATAZ_TOKEN",
        show_default=False,
        help="Runner token for --server. Prefer the CAPATAZ_TOKEN variable or "
        "--token-file: arguments are visible in ps.",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", help="Read the runner token for --server from this file."),
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
    server: ServerOption = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
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
    store: Store | RemoteQueue
    if server is not None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
        store = RemoteQueue(_server_url(server), _runner_token(token, token_file))
        logging.getLogger("capataz.runner").info("working through %s", store.server)
    else:
        store = _open_with_retry(database_url(repo.root))
        # Mask every vault value in what this runner writes (a wrong key stops it here).
        install_redaction(store, state_dir(repo.root), strict=True)
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

    def stop(signum: int, _frame: object) -> None:
        runner.shutdown(signal.Signals(signum).name)
        if isinstance(store, RemoteQueue):
            store.interrupt()  # an idle remote runner's long-poll claim ends now, not in 20 s

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        runner.run()
    finally:
        store.close()


@runner_app.command("start")
def start_command(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, max=64)] = None,
    label: Annotated[list[str] | None, typer.Option("--label")] = None,
    name: NameOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    repo_path: RepoOption = Path(),
) -> None:
    """Start a runner in the background (pid and log files under .capataz/)."""
    repo, _ = open_project(repo_path)
    args = [
        *(["--concurrency", str(concurrency)] if concurrency else []),
        *[part for value in label or [] for part in ("--label", value)],
        *(["--name", name] if name else []),
    ]
    if server is not None:
        url = _server_url(server)
        secret = _runner_token(token, token_file)
        _check_server(url, secret)
        args += ["--server", url]
        if token_file is not None:
            args += ["--token-file", str(token_file.resolve())]
        else:
            os.environ["CAPATAZ_TOKEN"] = secret  # the daemon inherits it; argv is public
    files = daemon_files(repo.root, name)
    pid = start_daemon(repo.root, files, args)
    out.print(f"Runner daemon started (PID {pid})")
    if server is not None:
        out.print(f"  Server: {_server_url(server)}")
    else:
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
    as_json: JsonOption = False,
    repo_path: RepoOption = Path(),
) -> None:
    """The local daemon's process, and every runner the queue has seen."""
    repo, _ = open_project(repo_path)
    files = daemon_files(repo.root, name)
    pid = read_pid(files)
    with opened_store(repo) as store:
        runners = store.runners.list()
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
    locked by another process) waits for it instead of dying: it is a daemon. Only that
    (StoreUnavailable) is waited out; a wrong URL or password fails at once."""
    log = logging.getLogger("capataz.runner")

    def waiting(exc: BaseException, delay: float) -> None:
        log.warning("%s; retrying in %.1f s", getattr(exc, "message", exc), delay)

    return retry(lambda: Store.open(url), give_up=patience, on_retry=waiting)


def _server_url(server: str) -> str:
    """``--server`` as a base URL, refused at once when it cannot be one."""
    from urllib.parse import urlsplit

    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CapatazError(
            f"--server {server!r} is not an http(s) URL",
            fix="give the address of `capataz serve`, e.g. http://10.0.0.5:8765",
        )
    return server.strip().rstrip("/")


def _runner_token(token: str | None, token_file: Path | None) -> str:
    """The runner token from --token-file, else --token / CAPATAZ_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CapatazError(
                f"cannot read --token-file {token_file}: {exc.strerror}", fix=NEEDS_RUNNER_ROLE
            ) from None
    if not token:
        raise CapatazError("--server needs a runner token", fix=NEEDS_RUNNER_ROLE)
    return token.strip()


def _check_server(url: str, token: str) -> None:
    """Before starting a daemon: a refused token is an error now (one line, exit 2);
    a server that does not answer yet is only a warning (the daemon keeps trying)."""
    queue = RemoteQueue(url, token, timeout=5.0)
    try:
        queue.metrics()
    except QueueUnavailable as exc:
        err.print(f"warning: {exc.message}; the runner will keep trying", highlight=False)
    finally:
        queue.close()


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
