"""The queue under stress: many processes on one store, and a database that restarts."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import Output, wait_for
from tests.postgres import Cluster, create_database, no_postgres
from tests.runner.test_runner import CONFIG

from capataz.store import NewTask, Store, TaskState


def _claim_until_empty(url: str, name: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = Store.open(url)
    done, refused = [], 0
    while (claimed := store.leases.claim(name, 30)) is not None:
        if store.leases.complete(claimed.id, claimed.fencing_token, "done"):
            done.append(claimed.id)
        else:
            refused += 1
    store.close()
    results.put((done, refused))


def test_many_processes_take_thousands_of_tasks_exactly_once(queue_url: str) -> None:
    store = Store.open(queue_url)
    total = 2000
    store.tasks.add_many([NewTask(f"t{i}", "true", id=f"t{i:05}") for i in range(total)])
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    workers = [
        context.Process(target=_claim_until_empty, args=(queue_url, f"p{i}", results))
        for i in range(6)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0  # no "database is locked", no crash
    counts = Counter(task_id for done, _ in outcomes for task_id in done)
    assert len(counts) == total and set(counts.values()) == {1}
    assert sum(refused for _, refused in outcomes) == 0
    assert Counter(t.status for t in store.tasks.list()) == {TaskState.DONE: total}
    assert store.audit.verify() is None
    store.close()


@pytest.fixture
def own_cluster() -> Iterator[tuple[Cluster, str]]:
    """A PostgreSQL of this test's own, so it can be restarted without hurting others."""
    cluster = Cluster()
    try:
        admin = cluster.init()
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        cluster.destroy()
        no_postgres(str(exc))
    try:
        yield cluster, create_database(admin)
    finally:
        cluster.destroy()


def test_runner_survives_a_database_restart(
    make_repo: Callable[..., Path], own_cluster: tuple[Cluster, str]
) -> None:
    cluster, url = own_cluster
    repo = make_repo(config=CONFIG)
    store = Store.open(url)
    store.tasks.add_many(
        [
            NewTask(f"t{i}", f"echo {i}; sleep 0.5; echo {i} > f{i}.txt", id=f"t{i}")
            for i in range(6)
        ]
    )
    store.close()
    env = {**os.environ, "CAPATAZ_DATABASE_URL": url}
    runner = subprocess.Popen(
        [sys.executable, "-m", "capataz", "runner", "run", "--exit-when-idle"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watcher = Store.open(url)
    output = Output(runner)
    wait_for(lambda: watcher.tasks.get("t1").status is TaskState.DONE, "t1 is done")
    watcher.close()
    cluster.stop("fast")  # the database goes away mid-backlog
    wait_for(lambda: "database unavailable" in output.text, "the runner notices the outage")
    cluster.start()
    text = output.finish(timeout=180)
    assert runner.returncode == 0, text[-3000:]
    store = Store.open(url)
    assert Counter(t.status for t in store.tasks.list()) == {TaskState.DONE: 6}
    assert all(t.attempts == 1 or t.attempts == 2 for t in store.tasks.list())
    files = [f for f in git(repo, "ls-tree", "--name-only", "main").split() if f.startswith("f")]
    assert sorted(files) == [f"f{i}.txt" for i in range(6)]  # each landed exactly once
    assert store.audit.verify() is None
    store.close()
