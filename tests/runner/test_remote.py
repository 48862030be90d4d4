"""Remote runners: the daemon working through ``capataz serve`` over HTTP, with the
repository local and the queue behind the API; through lost answers and a server
killed and restarted mid-run, without losing or duplicating a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.conftest import git
from tests.helpers import Output, wait_for
from tests.runner.test_runner import CONFIG
from tests.serving import free_port, start_serve

from capataz.config import parse_config
from capataz.runner import Runner
from capataz.runner.remote import RemoteQueue
from capataz.store import NewTask, Store, TaskState
from capataz.workspace.repo import Repository

# A lease long enough to outlive a server restart, even a slow one on a busy machine: a
# lease is a lease, and a runner cut off for longer than it loses the task (the sweeper
# rescues it, correctly, and the late result is refused).
REMOTE_CONFIG = (
    CONFIG.replace('lease = "3s"', 'lease = "60s"')
    + "\n[server]\nrate_limit = 10000\nrate_burst = 10000\n"
)


@dataclass
class Plane:
    """A ``capataz serve`` process that can be killed and started again on its port."""

    repo: Path
    url: str
    port: int
    tokens: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "CAPATAZ_DATABASE_URL": self.url}
        proc, _ = start_serve(self.repo, env, port=self.port)
        self.procs.append(proc)

    def kill(self) -> None:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)

    def runner(self, *args: str, token: str | None = None) -> subprocess.Popen[str]:
        """``capataz runner run --server`` with no database URL in its environment."""
        env = {k: v for k, v in os.environ.items() if k != "CAPATAZ_DATABASE_URL"}
        env["CAPATAZ_TOKEN"] = token or self.tokens["runner"]
        return subprocess.Popen(
            [sys.executable, "-m", "capataz", "runner", "run", "--server", self.base, *args],
            cwd=self.repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def serve_plane(
    make_repo: Callable[..., Path],
    url: str,
    config: str = REMOTE_CONFIG,
    files: dict[str, str] | None = None,
) -> Iterator[Plane]:
    """A repository with ``config`` (and ``files``), `capataz serve` over ``url``, runner
    and viewer tokens; every process the test started is stopped afterwards."""
    store = Store.open(url)
    try:
        tokens = {role: store.tokens.create(role, f"test-{role}") for role in ("runner", "viewer")}
    finally:
        store.close()
    made = Plane(make_repo(config=config, files=files), url, free_port(), tokens)
    made.start()
    yield made
    for proc in made.procs:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=10)


@pytest.fixture
def plane(make_repo: Callable[..., Path], queue_url: str) -> Iterator[Plane]:
    """A control plane over SQLite and, in a second run of the test, PostgreSQL."""
    yield from serve_plane(make_repo, queue_url)


@pytest.fixture
def sqlite_plane(make_repo: Callable[..., Path], tmp_path: Path) -> Iterator[Plane]:
    """A control plane over SQLite only, for what does not depend on the database."""
    yield from serve_plane(make_repo, f"sqlite:///{tmp_path / 'queue.db'}")


def test_a_remote_runner_runs_tasks_through_the_api(plane: Plane) -> None:
    store = Store.open(plane.url)
    store.tasks.add_many(
        [
            NewTask("a", "echo made a; echo a > a.txt", id="a"),
            NewTask("b", "test -f a.txt && echo b > b.txt", id="b", depends_on=["a"]),
            NewTask("c", "echo c > c.txt", id="c"),
        ]
    )
    runner = plane.runner("--exit-when-idle", "--concurrency", "2")
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0, output[-3000:]
    assert plane.tokens["runner"] not in output
    states = {t.id: t.status for t in store.tasks.list()}
    assert states == dict.fromkeys("abc", TaskState.DONE), (store.tasks.list(), output[-3000:])
    tree = git(plane.repo, "ls-tree", "--name-only", "main").split()
    assert {"a.txt", "b.txt", "c.txt"} <= set(tree)
    assert git(plane.repo, "rev-list", "--count", "main") == "4"
    detail = store.runs.get(store.runs.list(task_id="a")[0].id)
    assert [s.phase for s in detail.steps][:3] == ["prepare", "pre-gates", "execute"]
    assert all(s.ended_at is not None for s in detail.steps)
    assert "made a" in detail.log_tail and detail.file_changes[0]["path"] == "a.txt"
    (registered,) = store.runners.list()
    assert registered.stopped_at is not None and registered.hostname
    assert store.audit.verify() is None
    store.close()


@pytest.mark.slow
def test_a_bad_token_is_one_line_and_a_good_one_stays_out_of_ps(
    sqlite_plane: Plane, tmp_path: Path
) -> None:
    plane = sqlite_plane
    viewer = plane.tokens["viewer"]
    runner = plane.runner("--exit-when-idle", token=viewer)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 2, output
    assert "needs runner" in output and "capataz token create --role runner" in output
    assert "Traceback" not in output and viewer not in output

    token_file = tmp_path / "runner.token"
    token_file.write_text(plane.tokens["runner"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CAPATAZ_DATABASE_URL"}

    def capataz(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", "runner", *args],
            cwd=plane.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = capataz("start", "--server", plane.base, "--token", "cap_wrong")
    assert refused.returncode == 2 and "invalid token" in refused.stderr, refused.stderr
    started = capataz("start", "--server", plane.base, "--token-file", str(token_file))
    assert started.returncode == 0, started.stderr
    assert f"Server: {plane.base}" in started.stdout
    pid = int((plane.repo / ".capataz" / "runner.pid").read_text())
    assert plane.tokens["runner"] not in Path(f"/proc/{pid}/cmdline").read_text()
    store = Store.open(plane.url)
    store.tasks.add("bg", "echo bg > bg.txt", id="bg")
    wait_for(lambda: store.tasks.get("bg").status is TaskState.DONE, "bg is done")
    store.close()
    assert capataz("stop").returncode == 0
    log = (plane.repo / ".capataz" / "runner.log").read_text()
    assert f"working through {plane.base}" in log and plane.tokens["runner"] not in log


class LoseAnswers(httpx.BaseTransport):
    """Forwards every request, but drops the answer of the first request to each path
    ending with one of ``suffixes``, as a connection reset after the server acted."""

    def __init__(self, *suffixes: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.pending = set(suffixes)
        self.lost: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        hit = next((s for s in self.pending if request.url.path.endswith(s)), None)
        if hit is not None and not (hit == "/claim" and b'"data":null' in response.content):
            self.pending.discard(hit)
            self.lost.append(request.url.path)
            raise httpx.ReadError("connection reset after the server acted", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_lost_answers_neither_lose_nor_duplicate_anything(plane: Plane) -> None:
    store = Store.open(plane.url)
    store.tasks.add("only", "echo hello; echo x > x.txt", id="only")
    store.tasks.add("other", "echo y > y.txt", id="other", priority=-1)
    # /records: an outbox batch of steps and log lines, resent whole; /context: what
    # the task receives, asked again.
    transport = LoseAnswers("/claim", "/records", "/context", "/complete")
    queue = RemoteQueue(plane.base, plane.tokens["runner"], transport=transport)
    config = parse_config(REMOTE_CONFIG)
    runner = Runner(Repository.discover(plane.repo), config, queue, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    thread.join(timeout=90)
    assert not thread.is_alive()
    queue.close()
    assert len(transport.lost) == 4, transport.lost
    for task_id in ("only", "other"):
        task = store.tasks.get(task_id)
        assert (task.status, task.attempts) == (TaskState.DONE, 1), task.reason
        (run,) = store.runs.list(task_id=task_id)
        assert (run.lifecycle, run.status) == ("finished", "succeeded")
    detail = store.runs.get(store.runs.list(task_id="only")[0].id)
    assert detail.log_tail.count("hello") == 1
    phases = [s.phase for s in detail.steps]
    assert len(phases) == len(set(phases)), phases  # no step recorded twice
    assert git(plane.repo, "rev-list", "--count", "main") == "3"
    assert store.audit.verify() is None
    store.close()


def log_tail(store: Store, task_id: str) -> str:
    """The newest run's log as the server has it ("" before the first run exists)."""
    runs = store.runs.list(task_id=task_id)
    return (store.runs.get(runs[0].id).log_tail or "") if runs else ""


@pytest.mark.slow
def test_a_server_restart_mid_run_loses_and_duplicates_nothing(plane: Plane) -> None:
    store = Store.open(plane.url)
    store.tasks.add("long", "echo start; sleep 3; echo done > long.txt; echo end", id="long")
    runner = plane.runner("--exit-when-idle")
    output = Output(runner)
    wait_for(lambda: "start" in log_tail(store, "long"), "the agent has started")
    plane.kill()  # SIGKILL: no graceful shutdown, answers in flight are lost
    try:
        httpx.get(f"{plane.base}/health", timeout=1)
        raise AssertionError("the server is still answering")
    except httpx.TransportError:
        pass
    wait_for(lambda: "server unavailable" in output.text, "the runner notices the outage")
    plane.start()
    text = output.finish(timeout=120)
    assert runner.returncode == 0, text[-3000:]
    task = store.tasks.get("long")
    assert (task.status, task.attempts) == (TaskState.DONE, 1), task.reason
    (run,) = store.runs.list(task_id="long")
    assert run.lifecycle == "finished" and run.outcome == "done"
    tail = store.runs.get(run.id).log_tail
    assert "start" in tail and "end" in tail
    assert git(plane.repo, "rev-list", "--count", "main") == "2"  # landed exactly once
    assert git(plane.repo, "show", "main:long.txt") == "done"
    assert store.audit.verify() is None
    store.close()
