"""The runner daemon: claim, run, report — around a wait.

The main loop fills free slots with claimed tasks and otherwise waits for work
(LISTEN/NOTIFY on PostgreSQL, an adaptive poll on SQLite, the control plane's long-poll
claim over HTTP). Three side tasks run beside it, each a small named thread: the
heartbeat (the runner's own, and every running task's lease), the canceller (notices
within a second that a task was cancelled or rescued from under us), and the sweeper
(rescues tasks of dead runners; a remote runner's stops asking once its server says it
sweeps itself). Every store
call goes through :meth:`Runner.retry`, so a database (or, for a remote runner, a
control plane) that goes away for a while delays work but loses none. The queue is
anything that satisfies :class:`RunnerQueue`: the Store, or a RemoteQueue over HTTP."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from capataz.config import Config
from capataz.errors import QueueRefusedError, QueueUnavailable, Unavailable
from capataz.retry import OUTAGE
from capataz.retry import retry as retry_transient
from capataz.runner.execution import TaskExecution
from capataz.runner.queue import RunnerQueue
from capataz.store import ClaimedTask
from capataz.workspace.repo import Repository

__all__ = ["Runner"]

log = logging.getLogger("capataz.runner")
T = TypeVar("T")
# What the queue raises when the database (StoreUnavailable) or the control plane
# (QueueUnavailable) is away for now. Nothing else is retried: a constraint violation or
# a broken query is a bug and must surface at once, not after minutes of retries.
_TRANSIENT = (Unavailable,)


class Runner:
    def __init__(
        self,
        repo: Repository,
        config: Config,
        store: RunnerQueue,
        *,
        name: str | None = None,
        concurrency: int | None = None,
        labels: list[str] | None = None,
        max_tasks: int | None = None,
        exit_when_idle: bool = False,
    ) -> None:
        self.repo = repo
        self.config = config
        self.settings = config.runner
        self.store = store
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency or self.settings.concurrency
        self.labels = labels if labels is not None else list(self.settings.labels)
        self.max_tasks = max_tasks  # stop after this many claims (tests, batch jobs)
        self.exit_when_idle = exit_when_idle  # stop once nothing is ready or running
        self.id = ""
        self.stopping = threading.Event()  # stop claiming; let running tasks finish
        self.halted = threading.Event()  # everything finished: side tasks end too
        self.wake = threading.Event()
        self.running: dict[str, TaskExecution] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.claimed_count = 0

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> None:
        """Work until :meth:`shutdown` (or max_tasks / idle exit); returns when done."""
        self.id = self.retry(
            lambda: self.store.runners.register(
                self.name,
                labels=self.labels,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                concurrency=self.concurrency,
            ),
            "register",
        )
        log.info(
            "runner %s (%s) online: concurrency %d, labels %s",
            self.id,
            self.name,
            self.concurrency,
            ",".join(self.labels) or "-",
        )
        sides = [
            self._side("heartbeat", self._heartbeat_loop, self.settings.heartbeat),
            self._side("canceller", self._cancel_loop, 1.0),
            self._side("sweeper", self._sweep_loop, self.settings.sweep_interval),
        ]
        try:
            self._claim_loop()
        finally:
            self.stopping.set()
            self._drain()
            self.halted.set()
            for side in sides:
                side.join(timeout=5)
            self.retry(lambda: self.store.runners.mark_stopped(self.id), "unregister", give_up=5.0)
            log.info("runner %s stopped after %d task(s)", self.id, self.claimed_count)

    def shutdown(self, why: str = "asked to stop") -> None:
        """Stop claiming; running tasks get ``grace`` seconds before they are killed and
        given back to the queue (safe to call from a signal handler)."""
        if not self.stopping.is_set():
            log.info("runner %s: %s; no new tasks", self.id or self.name, why)
            self.stopping.set()
            self.wake.set()

    # -- the main loop ----------------------------------------------------------------

    def _claim_loop(self) -> None:
        idle_wait = 0.05
        failures = 0  # claims in a row that met an outage
        claim_key: str | None = None  # kept while a claim's answer is in doubt
        while not self.stopping.is_set():
            self._reap()
            if self.max_tasks is not None and self.claimed_count >= self.max_tasks:
                if not self.running:
                    return
            elif len(self.running) < self.concurrency:
                claim_key = claim_key or uuid.uuid4().hex
                try:
                    claimed = self.store.leases.claim(
                        self.id,
                        self.settings.lease,
                        self.labels or None,
                        claim_key=claim_key,
                        wait=self._claim_wait(),
                    )
                    claim_key, failures = None, 0
                except _TRANSIENT as exc:
                    # The claim may have happened with its answer lost: the retry sends
                    # the same key and gets that task back instead of a second one.
                    failures += 1
                    claimed, idle_wait = None, OUTAGE.delay(failures)
                    log.warning("claim: %s; retrying in %.1f s", _unavailable(exc), idle_wait)
                if claimed is not None:
                    self._start(claimed)
                    idle_wait = 0.05
                    continue
                if self.exit_when_idle and not self.running and self._queue_idle():
                    return
            self.wake.clear()
            if self.stopping.is_set():
                continue  # asked to stop during the claim: its wake-up was just cleared
            if self._listen():
                idle_wait = 0.05
                continue
            self.wake.wait(idle_wait)
            idle_wait = min(idle_wait * 2, self.settings.poll_interval)

    def _claim_wait(self) -> float:
        """How long this claim may wait inside the queue for work: the queue's long poll
        (a remote runner's, through ``capataz serve``) when nothing runs here, so an idle
        runner asks once per wait instead of once per poll; 0 while tasks run (the loop
        must stay free to reap them) or when the runner exits once idle."""
        if self.running or self.exit_when_idle or self.stopping.is_set():
            return 0.0
        return self.store.leases.claim_wait

    def _listen(self) -> bool:
        """Block until a task becomes ready (or a poll interval) when the queue can
        (PostgreSQL's LISTEN); elsewhere the caller polls with backoff."""
        if self.running or not self.store.leases.waits_for_ready:
            return False
        try:
            return self.store.leases.wait_for_ready(self.settings.poll_interval)
        except _TRANSIENT as exc:
            log.warning("listen: %s", _unavailable(exc))
            return False

    def _queue_idle(self) -> bool:
        tasks = self.retry(self.store.metrics, "metrics")["tasks"]
        return not (tasks.get("ready") or tasks.get("running") or tasks.get("escalated"))

    def _start(self, claimed: ClaimedTask) -> None:
        execution = TaskExecution(
            claimed,
            store=self.store,
            repo=self.repo,
            config=self.config,
            runner_id=self.id,
            retry=self.retry,
        )
        thread = threading.Thread(
            target=self._execute, args=(execution,), name=f"task-{claimed.id}", daemon=True
        )
        with self._lock:
            self.running[claimed.id] = execution
            self._threads[claimed.id] = thread
        self.claimed_count += 1
        thread.start()

    def _execute(self, execution: TaskExecution) -> None:
        try:
            execution.run()
        except Exception:
            log.exception("task %s: runner error", execution.task_id)
        finally:
            with self._lock:
                self.running.pop(execution.task_id, None)
            self.wake.set()

    def _reap(self) -> None:
        with self._lock:
            for task_id in [t for t, th in self._threads.items() if not th.is_alive()]:
                self._threads.pop(task_id).join()

    def _drain(self) -> None:
        """Let running tasks finish within the grace period, then kill and release them."""
        deadline = time.monotonic() + self.settings.grace
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            leftover = list(self.running.values())
        for execution in leftover:
            execution.stop("grace period over", shutdown=True)
        for thread in list(self._threads.values()):
            thread.join(timeout=30)

    def _alive(self) -> bool:
        with self._lock:
            return any(thread.is_alive() for thread in self._threads.values())

    # -- side tasks -------------------------------------------------------------------

    def _side(self, name: str, step: Callable[[], None], every: float) -> threading.Thread:
        def loop() -> None:
            while not self.halted.wait(every):
                try:
                    step()
                except _TRANSIENT as exc:
                    log.warning("%s: %s; will retry", name, _unavailable(exc))
                except QueueRefusedError as exc:  # the claim loop stops the runner
                    log.error("%s: %s", name, exc)
                except Exception:
                    log.exception("%s failed; will retry", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def _heartbeat_loop(self) -> None:
        self.store.runners.heartbeat(self.id)
        with self._lock:
            executions = list(self.running.values())
        for execution in executions:
            claimed = execution.claimed
            if not self.store.leases.heartbeat(
                claimed.id, claimed.fencing_token, self.settings.lease
            ):
                execution.stop("the task was cancelled or given to another runner")
            else:
                execution.flush_log()

    def _cancel_loop(self) -> None:
        with self._lock:
            executions = list(self.running.values())
        for execution in executions:
            claimed = execution.claimed
            if not execution.stopped.is_set() and not self.store.leases.is_current(
                claimed.id, claimed.fencing_token
            ):
                log.info("task %s: cancelled or rescued elsewhere; stopping it", claimed.id)
                execution.stop("the task was cancelled or given to another runner")

    def _sweep_loop(self) -> None:
        rescued = self.store.sweep(actor=f"sweeper:{self.id}")
        if rescued:
            log.info("sweeper: rescued %s", ", ".join(rescued))
            self.wake.set()

    # -- resilience -------------------------------------------------------------------

    def retry(self, call: Callable[[], T], what: str, *, give_up: float | None = 300.0) -> T:
        """Call the queue, retrying through transient errors (database or control plane
        unreachable) with capataz's one backoff (:mod:`capataz.retry`); any other error
        is raised at once. After ``give_up`` seconds the error is raised (None: retry
        forever)."""

        def waiting(exc: BaseException, delay: float) -> None:
            log.warning("%s: %s; retrying in %.1f s", what, _unavailable(exc), delay)

        return retry_transient(call, transient=_TRANSIENT, give_up=give_up, on_retry=waiting)


def _unavailable(exc: BaseException) -> str:
    """What went away, for the log: the control plane or the database (the error's own
    one-line message, which names which)."""
    message = exc.message if isinstance(exc, Unavailable) else str(exc)
    first = (message.splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, QueueUnavailable):
        return f"server unavailable ({first})"
    return f"database unavailable ({first})"
