"""The queue under stress: many processes on one store, a sealer killed mid-batch, and a
database that restarts."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import git
from tests.helpers import CEILING, Output, wait_for
from tests.postgres import Cluster, create_database, no_postgres
from tests.runner.test_runner import CONFIG

from capataz.store import NewTask, Store, TaskState
from capataz.store import _audit_sql as audit_log
from capataz.store.schema import audit, audit_pending, tasks


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


# A sealer that dies in the middle of a batch. Its third batch runs whole inside the
# batch's transaction (the entries chained into ``audit``, deleted from
# ``audit_pending``), then, before the commit, it says so and freezes itself, holding
# that transaction and the sealer's lock until the test SIGKILLs it. The hook wraps
# ``seal_batch`` only, so it holds whatever SQL the batch runs inside.
_SEALER_FROZEN_MID_BATCH = """
import os, signal, sys
from capataz.store import Store, _audit_sql

real, batches = _audit_sql.seal_batch, []

def freezes_in_the_third_batch(conn, limit=1000):
    batches.append(1)
    sealed = real(conn, limit)
    if len(batches) == 3:  # chained, not committed
        # Only the kill may end this transaction, not the server's idle timeout.
        conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        print("frozen mid-batch", sealed, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return sealed

_audit_sql.seal_batch = freezes_in_the_third_batch
Store.open(sys.argv[1]).audit.seal(batch=int(sys.argv[2]))
print("sealed everything: never frozen", flush=True)
"""


def _claim_pausing_once(
    url: str,
    name: str,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
    paused: multiprocessing.Queue,  # type: ignore[type-arg]
    resume: Any,
    pause_after: int,
) -> None:
    """``_claim_until_empty``, stopping once after ``pause_after`` tasks until resumed."""
    store = Store.open(url)
    done, refused = [], 0
    while (claimed := store.leases.claim(name, 30)) is not None:
        if store.leases.complete(claimed.id, claimed.fencing_token, "done"):
            done.append(claimed.id)
        else:
            refused += 1
        if len(done) + refused == pause_after:
            paused.put(name)
            resume.wait(CEILING)
    store.close()
    results.put((done, refused))


def _seal_until_stopped(url: str, sealed: Any, stop: Any) -> None:
    """A sweeper's sealing, round after round, counting what it chained."""
    store = Store.open(url)
    while not stop.is_set():
        count = store.audit.seal(batch=100)
        if count:
            with sealed.get_lock():
                sealed.value += count
        stop.wait(0.1)  # a sweeper's round, shortened
    store.close()


def _count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _done(store: Store) -> int:
    """How many tasks are done (a count: listing 2,000 tasks per poll costs CPU)."""
    query = sa.select(sa.func.count()).where(tasks.c.status == TaskState.DONE.value)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_sealer_killed_mid_batch_loses_and_doubles_no_entry(pg_server: str) -> None:
    """6 processes take 2,000 tasks while the sealer is SIGKILLed inside a batch and
    another takes over: every task done once, and every entry sealed exactly once.

    PostgreSQL only: the sealer exists there alone. On SQLite each writer chains its own
    entry in its own transaction (BEGIN IMMEDIATE), so there is no batch to die in; a
    writer killed mid-transaction is the 6 x 2,000 test's business."""
    url = create_database(pg_server)
    store = Store.open(url)
    total, batch, pause_after, workers_count = 2000, 100, 100, 6
    store.tasks.add_many([NewTask(f"t{i}", "true", id=f"t{i:05}") for i in range(total)])
    store.audit.seal()
    created = _count(store, audit)  # the tasks' creation, sealed before any claim
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    paused: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    resume, stop, sealed = context.Event(), context.Event(), context.Value("i", 0)
    workers = [
        context.Process(
            target=_claim_pausing_once,
            args=(url, f"p{i}", results, paused, resume, pause_after),
        )
        for i in range(workers_count)
    ]
    successor = context.Process(target=_seal_until_stopped, args=(url, sealed, stop))
    sealer: subprocess.Popen[str] | None = None
    try:
        for worker in workers:
            worker.start()
        for _ in workers:  # 600 claims and 600 completions await sealing
            paused.get(timeout=CEILING)
        assert _count(store, audit_pending) >= 3 * batch
        sealer = subprocess.Popen(
            [sys.executable, "-c", _SEALER_FROZEN_MID_BATCH, url, str(batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sealer.stdout is not None
        assert sealer.stdout.readline().split() == ["frozen", "mid-batch", str(batch)]
        wait_for(lambda: _process_state(sealer.pid) == "T", "the sealer freezes mid-batch")
        assert _count(store, audit) == created + 2 * batch  # two batches committed
        assert store.audit.seal() is None  # the frozen one holds the lock: others skip
        resume.set()
        # Workers commit entries the frozen batch cannot see, then it dies under them.
        wait_for(lambda: _done(store) >= total // 2, "the workers go on while it is frozen")
        sealer.kill()
        assert sealer.wait(timeout=CEILING) == -signal.SIGKILL
        with store.engine.connect() as conn:  # the chain alone: entries wait meanwhile
            assert audit_log.verify(conn) is None
        assert _count(store, audit) == created + 2 * batch  # the third batch: nothing of it
        successor.start()
        wait_for(lambda: sealed.value > 0, "another sealer takes over")
        outcomes = [results.get(timeout=240) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        stop.set()
        successor.join(timeout=CEILING)
        assert successor.exitcode == 0
    finally:
        resume.set()
        stop.set()
        if sealer is not None and sealer.poll() is None:
            sealer.kill()
            sealer.wait()
        for process in [*workers, successor]:
            if process.is_alive():
                process.kill()
                process.join()
    counts = Counter(task_id for done, _ in outcomes for task_id in done)
    assert len(counts) == total and set(counts.values()) == {1}
    assert sum(refused for _, refused in outcomes) == 0
    assert Counter(t.status for t in store.tasks.list()) == {TaskState.DONE: total}
    assert store.audit.verify() is None  # seals the rest; the chain is whole
    assert _count(store, audit_pending) == 0
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(audit.c.action, audit.c.subject)).all()
    ids = {f"t{i:05}" for i in range(total)}
    for action in ("task.created", "task.claimed", "task.done"):
        subjects = Counter(subject for act, subject in rows if act == action)
        assert subjects.keys() == ids and set(subjects.values()) == {1}, action
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
