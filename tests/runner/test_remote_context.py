"""Context between tasks through a remote runner (``runner run --server``): what a task
publishes reaches its dependents through the control plane exactly as through the
database; and a cancel still reaches a running remote task within seconds now that the
runner's outbox answers stand in for most lease polls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.api.conftest import _free_port
from tests.conftest import git
from tests.runner.test_remote import REMOTE_CONFIG, Plane
from tests.runner.test_runner import wait_for

from capataz.store import NewTask, Store, TaskState

CONFIG = (
    REMOTE_CONFIG
    + """
# $1 is the context the task received, substituted into the command.
[agents.reader]
command = ["bash", "-c", "{instruction}", "agent", "{context}"]
timeout = "60s"
context_read = ["build.*"]
"""
)
PUBLISH = "mkdir -p .capataz && printf '%s' '{json}' > .capataz/context-out.json"


@pytest.fixture
def plane(make_repo: Callable[..., Path], queue_url: str) -> Iterator[Plane]:
    """A control plane (SQLite, then PostgreSQL) whose config has a context reader."""
    store = Store.open(queue_url)
    try:
        tokens = {"runner": store.create_token("runner", "test-runner")}
    finally:
        store.close()
    made = Plane(make_repo(config=CONFIG), queue_url, _free_port(), tokens)
    made.start()
    yield made
    for proc in made.procs:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=10)


def test_context_flows_through_a_remote_runner(plane: Plane) -> None:
    build = json.dumps({"build.version": "1.2.3", "_ttl": "1h"})
    store = Store.open(plane.url)
    store.add_tasks(
        [
            NewTask("build", f"{PUBLISH.format(json=build)} && echo a > a.txt", id="a"),
            NewTask(
                "use",
                "printf '%s\\n' \"$1\" > b.txt && cat .capataz/context.json > b-file.json",
                id="b",
                agent="reader",
                depends_on=["a"],
            ),
        ]
    )
    runner = plane.runner("--exit-when-idle")
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode == 0, output[-3000:]
    states = {t.id: t.status for t in store.list_tasks()}
    assert states == dict.fromkeys("ab", TaskState.DONE), output[-3000:]
    landed = git(plane.repo, "show", "main:b.txt")
    assert "1.2.3" in landed and json.loads(landed) == {"build.version": "1.2.3"}
    assert json.loads(git(plane.repo, "show", "main:b-file.json")) == {"build.version": "1.2.3"}
    tree = git(plane.repo, "ls-tree", "-r", "--name-only", "main").split()
    assert not any(path.startswith(".capataz/") for path in tree)
    for task in "ab":  # its steps came through the outbox's batches
        steps = store.get_run(store.list_runs(task_id=task)[0].id).steps
        assert [s.phase for s in steps][:3] == ["prepare", "pre-gates", "execute"]
        assert all(s.ended_at is not None for s in steps)
    store.close()


def test_a_cancel_reaches_a_running_remote_task_within_seconds(plane: Plane) -> None:
    store = Store.open(plane.url)
    store.add_task("long", "while true; do echo tick; sleep 0.2; done", id="long")
    runner = plane.runner("--exit-when-idle")
    try:
        workspaces = plane.repo / ".capataz" / "workspaces"

        def ticking() -> bool:
            runs = store.list_runs(task_id="long")
            return bool(runs) and "tick" in store.get_run(runs[0].id).log_tail

        def workspace_gone() -> bool:
            return not any(workspaces.glob("long*"))

        wait_for(ticking, timeout=60)
        time.sleep(1.5)  # ticking: the outbox answers stand in for the lease polls
        assert not workspace_gone()
        cancelled_at = time.monotonic()
        store.cancel("long", "operator changed their mind")
        wait_for(workspace_gone, timeout=15)
        assert time.monotonic() - cancelled_at < 5
        output, _ = runner.communicate(timeout=60)
        assert runner.returncode == 0, output[-3000:]
        assert store.get_task("long").status is TaskState.CANCELLED
        assert git(plane.repo, "rev-list", "--count", "main") == "1"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        store.close()
