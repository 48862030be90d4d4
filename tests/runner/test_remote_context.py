"""Context between tasks through a remote runner (``runner run --server``): what a task
publishes reaches its dependents through the control plane exactly as through the
database; and a cancel still reaches a running remote task within seconds now that the
runner's outbox answers stand in for most lease polls."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import host_pids, wait_for
from tests.runner.test_remote import REMOTE_CONFIG, Plane, serve_plane
from tests.runner.test_runner import endless, log_tail

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
    yield from serve_plane(make_repo, queue_url, CONFIG)


def test_context_flows_through_a_remote_runner(plane: Plane) -> None:
    build = json.dumps({"build.version": "1.2.3", "_ttl": "1h"})
    store = Store.open(plane.url)
    store.tasks.add_many(
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
    states = {t.id: t.status for t in store.tasks.list()}
    assert states == dict.fromkeys("ab", TaskState.DONE), output[-3000:]
    landed = git(plane.repo, "show", "main:b.txt")
    assert "1.2.3" in landed and json.loads(landed) == {"build.version": "1.2.3"}
    assert json.loads(git(plane.repo, "show", "main:b-file.json")) == {"build.version": "1.2.3"}
    tree = git(plane.repo, "ls-tree", "-r", "--name-only", "main").split()
    assert not any(path.startswith(".capataz/") for path in tree)
    for task in "ab":  # its steps came through the outbox's batches
        steps = store.runs.get(store.runs.list(task_id=task)[0].id).steps
        assert [s.phase for s in steps][:3] == ["prepare", "pre-gates", "execute"]
        assert all(s.ended_at is not None for s in steps)
    store.close()


def test_a_cancel_reaches_a_running_remote_task(plane: Plane) -> None:
    store = Store.open(plane.url)
    marker = f"capataz-cancel-{os.urandom(6).hex()}"
    store.tasks.add("long", endless(marker), id="long", agent="endless")  # an hour, unless
    runner = plane.runner("--exit-when-idle")
    try:
        workspaces = plane.repo / ".capataz" / "workspaces"

        def ticking(count: int) -> bool:
            return log_tail(store, "long").count("tick") >= count

        def workspace_gone() -> bool:
            return not any(workspaces.glob("long*"))

        wait_for(lambda: ticking(1), "the agent is running")
        # Several outbox batches later: their answers stand in for the lease polls.
        seen = log_tail(store, "long").count("tick")
        wait_for(lambda: ticking(seen + 10), "more output through the outbox")
        assert not workspace_gone() and host_pids(marker)
        store.tasks.cancel("long", "operator changed their mind")
        wait_for(workspace_gone, "the cancelled run's workspace is removed")
        output, _ = runner.communicate(timeout=60)
        assert runner.returncode == 0, output[-3000:]
        assert store.tasks.get("long").status is TaskState.CANCELLED
        assert git(plane.repo, "rev-list", "--count", "main") == "1"
        assert host_pids(marker) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        store.close()
