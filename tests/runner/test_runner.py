"""Runner daemons against a real queue (SQLite and PostgreSQL), real git, real sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import host_pids, wait_for

from capataz.config import parse_config
from capataz.runner import Runner
from capataz.store import NewTask, Store, TaskState
from capataz.workspace.repo import Repository

CONFIG = """
[project]
escalation_timeout = "30s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"
idle_timeout = "20s"

# Runs until stopped: within a test, only a cancel or a runner's grace ends its task.
[agents.endless]
command = ["bash", "-c", "{instruction}"]
timeout = "1h"
idle_timeout = "20s"

[runner]
lease = "3s"
heartbeat = "1s"
sweep_interval = "0.5s"
poll_interval = "0.2s"
grace = "5s"

[policy]
forbidden_paths = ["legacy/**"]
max_changed_files = 3
"""


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


def run_runner(repo: Path, store: Store, **options: object) -> Runner:
    runner = Runner(
        Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True, **options
    )  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "runner did not finish"
    return runner


def log_tail(store: Store, task_id: str) -> str:
    """The output of the task's newest run so far ("" before it has one)."""
    runs = store.runs.list(task_id=task_id)
    return store.runs.get(runs[0].id).log_tail if runs else ""


def endless(marker: str) -> str:
    """An agent that ticks until stopped; ``marker`` names its processes on the host."""
    return f"while true; do echo tick; sleep 0.2; done # {marker}"


def test_tasks_run_in_dependency_order_and_land(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add_many(
        [
            NewTask("a", "echo a > a.txt", id="a"),
            NewTask("b", "test -f a.txt && echo b > b.txt", id="b", depends_on=["a"]),
            NewTask("c", "test -f a.txt && echo c > c.txt", id="c", depends_on=["a"]),
            NewTask(
                "d",
                "test -f b.txt && test -f c.txt && echo d > d.txt",
                id="d",
                depends_on=["b", "c"],
            ),
        ]
    )
    run_runner(repo, store, concurrency=2)
    assert {t.id: t.status for t in store.tasks.list()} == dict.fromkeys("abcd", TaskState.DONE)
    assert git(repo, "ls-tree", "--name-only", "main").split() == [
        ".gitignore",
        "README.md",
        "a.txt",
        "b.txt",
        "c.txt",
        "capataz.toml",
        "d.txt",
    ]
    assert store.audit.verify() is None
    runs = store.runs.list(task_id="d")
    detail = store.runs.get(runs[0].id)
    assert [s.phase for s in detail.steps][:3] == ["prepare", "pre-gates", "execute"]
    assert detail.file_changes == [
        {"path": "d.txt", "kind": "added", "lines_added": 1, "lines_removed": 0, "binary": False}
    ]
    store.close()


def test_blocked_dependency_stops_its_dependents(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add_many(
        [
            NewTask("bad", "mkdir -p legacy && echo x > legacy/x.py", id="bad"),
            NewTask("after", "echo y > y.txt", id="after", depends_on=["bad"]),
        ]
    )
    run_runner(repo, store)
    states = {t.id: t for t in store.tasks.list()}
    assert states["bad"].status is TaskState.BLOCKED
    assert states["after"].status is TaskState.BLOCKED and "bad" in (states["after"].reason or "")
    detail = store.runs.get(store.runs.list(task_id="bad")[0].id)
    assert [v["type"] for v in detail.violations] == ["FORBIDDEN_PATH"]
    store.close()


def test_failed_attempts_retry_then_fail(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url, retry_base_seconds=0.1, retry_cap_seconds=0.2)
    store.tasks.add("flaky", "echo try >> /tmp/x; exit 1", id="flaky", max_attempts=2)
    run_runner(repo, store)
    task = store.tasks.get("flaky")
    assert task.status is TaskState.FAILED and task.attempts == 2
    assert len(store.runs.list(task_id="flaky")) == 2
    store.close()


def test_cancel_stops_a_running_task_and_leaves_nothing(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    marker = f"capataz-cancel-{os.urandom(6).hex()}"
    store.tasks.add("long", endless(marker), id="long", agent="endless")  # an hour, unless
    runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_for(lambda: "tick" in log_tail(store, "long"), "the agent is running")
    assert host_pids(marker), "the agent's processes are visible on the host"
    store.tasks.cancel("long", "operator changed their mind")
    wait_for(lambda: not runner.running, "the runner stops the cancelled task")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert store.tasks.get("long").status is TaskState.CANCELLED
    assert [r.status for r in store.runs.list(task_id="long")] == ["cancelled"]
    assert host_pids(marker) == []
    assert git(repo, "rev-list", "--count", "main") == "1"
    assert not (repo / ".capataz" / "workspaces" / "long").exists()
    store.close()


def test_a_quiet_running_task_shows_its_last_line(repo: Path) -> None:
    store = Store.open(f"sqlite:///{repo / 'queue.db'}")
    store.tasks.add("quiet", "echo thinking; sleep 3600", id="quiet", agent="endless")
    runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:  # the agent prints nothing more for an hour: the heartbeat uploads the line
        wait_for(lambda: "thinking" in log_tail(store, "quiet"), "the line in the run's log")
    finally:
        store.tasks.cancel("quiet", "seen")
        thread.join(timeout=60)
        store.close()
    assert not thread.is_alive()


def test_escalation_answered_through_the_queue(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add("many", "touch a b c d", id="many")
    runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_for(lambda: store.tasks.get("many").status is TaskState.ESCALATED, "many is escalated")
    store.escalations.answer("many", "approve", note="fine", decided_by="ops")
    thread.join(timeout=60)
    assert store.tasks.get("many").status is TaskState.DONE
    assert "d" in git(repo, "ls-tree", "--name-only", "main").split()
    store.close()


def _runner_process(repo: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "capataz", "runner", "run", *args],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_many_runner_processes_do_every_task_exactly_once(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    count = 40
    store.tasks.add_many(
        [NewTask(f"t{i}", f"echo {i} > f{i}.txt", id=f"t{i:03}") for i in range(count)]
    )
    runners = [
        _runner_process(repo, queue_url, "--concurrency", "2", "--exit-when-idle") for _ in range(3)
    ]
    for runner in runners:
        runner.communicate(timeout=300)
        assert runner.returncode == 0
    assert Counter(t.status for t in store.tasks.list()) == {TaskState.DONE: count}
    files = [f for f in git(repo, "ls-tree", "--name-only", "main").split() if f.startswith("f")]
    assert len(files) == count
    assert int(git(repo, "rev-list", "--count", "main")) == count + 1  # one commit per task
    assert store.audit.verify() is None
    store.close()


def _freeze_between_transactions(process: subprocess.Popen[str], url: str) -> None:
    """SIGSTOP ``process`` at a moment it holds no SQLite write lock. (A process frozen
    inside a write transaction stalls every SQLite writer until it resumes: SQLite has
    one writer at a time. That is the database's nature, not what this test is about.)"""
    import sqlite3

    for _ in range(100):
        os.kill(process.pid, signal.SIGSTOP)
        if not url.startswith("sqlite:///"):
            return
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("could not freeze the runner outside a transaction")


def test_a_frozen_runner_is_rescued_and_its_late_result_refused(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add("slow", "echo start; sleep 4; echo slow > slow.txt", id="slow")
    first = _runner_process(repo, queue_url, "--max-tasks", "1")
    wait_for(lambda: "start" in log_tail(store, "slow"), "the agent has started")
    _freeze_between_transactions(first, queue_url)  # a runner that hangs (or is cut off)
    second = _runner_process(repo, queue_url, "--exit-when-idle")
    second_output, _ = second.communicate(timeout=120)
    task = store.tasks.get("slow")
    assert task.status is TaskState.DONE, f"{task.status} {task.reason}\n{second_output[-3000:]}"
    os.kill(first.pid, signal.SIGCONT)
    output, _ = first.communicate(timeout=60)
    # The frozen runner wakes up, learns it lost the task, stops and rolls back.
    assert "cancelled or rescued elsewhere" in output or "no longer holds" in output, output[-3000:]
    assert git(repo, "ls-tree", "--name-only", "main").split().count("slow.txt") == 1
    assert int(git(repo, "rev-list", "--count", "main")) == 2  # landed exactly once
    assert store.tasks.get("slow").status is TaskState.DONE
    store.close()


def test_a_killed_runner_is_rescued(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add("victim", "echo start; sleep 5; echo v > v.txt", id="victim")
    first = _runner_process(repo, queue_url)
    wait_for(lambda: store.tasks.get("victim").status is TaskState.RUNNING, "victim is running")
    first.kill()
    first.wait()
    second = _runner_process(repo, queue_url, "--exit-when-idle")
    second.communicate(timeout=120)
    task = store.tasks.get("victim")
    assert task.status is TaskState.DONE and task.attempts == 2
    assert [r.status for r in store.runs.list(task_id="victim")] == ["succeeded", "lost"]
    store.close()


def test_sigterm_lets_the_running_task_finish(repo: Path, queue_url: str) -> None:
    store = Store.open(queue_url)
    store.tasks.add("busy", "echo start; sleep 3; echo b > b.txt", id="busy")
    store.tasks.add("next", "echo n > n.txt", id="next", depends_on=["busy"])
    runner = _runner_process(repo, queue_url)
    wait_for(lambda: "start" in log_tail(store, "busy"), "the agent has started")
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0, output
    assert store.tasks.get("busy").status is TaskState.DONE
    assert store.tasks.get("next").status is TaskState.READY  # not claimed after SIGTERM
    store.close()


def test_runner_daemon_start_status_logs_stop(repo: Path) -> None:
    def capataz(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )

    started = capataz("runner", "start")
    assert started.returncode == 0, started.stderr
    assert "Runner daemon started (PID" in started.stdout
    assert capataz("runner", "start").returncode == 2  # already running
    store = Store.open(f"sqlite:///{repo / '.capataz' / 'capataz.db'}")
    store.tasks.add("x", "echo x > x.txt", id="x")
    wait_for(lambda: store.tasks.get("x").status is TaskState.DONE, "x is done")
    status = json.loads(capataz("runner", "status", "--json").stdout)
    assert status["daemon"]["alive"] and status["runners"][0]["online"]
    assert "task x" in capataz("runner", "logs").stdout
    assert "stopped" in capataz("runner", "stop").stdout
    assert capataz("runner", "stop").returncode == 2
    store.close()


def test_sigterm_after_grace_kills_and_gives_the_task_back(
    make_repo: Callable[..., Path], queue_url: str
) -> None:
    repo = make_repo(config=CONFIG.replace('grace = "5s"', 'grace = "1s"'))
    store = Store.open(queue_url)
    store.tasks.add("endless", "while true; do echo tick; sleep 0.2; done", id="endless")
    runner = _runner_process(repo, queue_url)
    wait_for(lambda: "tick" in log_tail(store, "endless"), "the agent is running")
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0, output[-2000:]
    task = store.tasks.get("endless")
    assert task.status is TaskState.READY and task.attempts == 0  # released, attempt not spent
    assert "released" in output
    assert git(repo, "rev-list", "--count", "main") == "1"
    store.close()
