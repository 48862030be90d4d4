"""What a runner needs from its queue, and nothing more.

A runner works either on the database directly (:class:`capataz.store.Store`) or
through the HTTP control plane (:class:`capataz.runner.remote.RemoteQueue`). Both
satisfy :class:`RunnerQueue` structurally, so the daemon (``worker``) and one run's
execution (``execution``) are written once against this protocol and cannot grow a
dependency on SQL that the remote runner could not honour.

The protocol has the Store's shape: the same facades (``runners``, ``leases``,
``runs``, ``escalations``), each reduced to the methods a runner calls, with the
Store's meaning (see each method there), and the two cross-cutting calls
(``sweep``, ``metrics``). So ``queue.leases.claim(...)`` in the runner reads like
``store.leases.claim(...)`` anywhere else."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from capataz.store.records import ClaimedTask, EscalationAnswer, RunDetails
from capataz.store.statuses import TaskState

__all__ = ["QueueEscalations", "QueueLeases", "QueueRunners", "QueueRuns", "RunnerQueue"]


class QueueRunners(Protocol):
    """The runner itself: ``store.runners``."""

    def register(
        self,
        name: str,
        *,
        labels: Sequence[str] = ...,
        hostname: str,
        pid: int,
        concurrency: int,
    ) -> str: ...

    def heartbeat(self, runner_id: str) -> None: ...

    def mark_stopped(self, runner_id: str) -> None: ...


class QueueLeases(Protocol):
    """The tasks it holds, and waiting for one: ``store.leases``."""

    def claim(
        self,
        runner_id: str,
        lease_seconds: float = ...,
        labels: Iterable[str] | None = ...,
        *,
        claim_key: str | None = ...,
        wait: float = ...,
    ) -> ClaimedTask | None: ...

    @property
    def claim_wait(self) -> float:
        """Seconds an idle runner's claim may wait inside the queue for work to arrive
        (the control plane's long poll); 0: the claim answers at once and the runner
        waits in its own loop."""
        ...

    def heartbeat(self, task_id: str, fencing_token: int, lease_seconds: float = ...) -> bool: ...

    def is_current(self, task_id: str, fencing_token: int) -> bool: ...

    def release(
        self, task_id: str, fencing_token: int, reason: str, *, delay_seconds: float = ...
    ) -> bool: ...

    def complete(
        self,
        task_id: str,
        fencing_token: int,
        state: TaskState | str,
        reason: str | None = ...,
        *,
        decision: str | None = ...,
        actor: str | None = ...,
        details: RunDetails | None = ...,
    ) -> bool: ...

    @property
    def waits_for_ready(self) -> bool:
        """Whether :meth:`wait_for_ready` blocks until woken (worth calling when idle)."""
        ...

    def wait_for_ready(self, timeout: float) -> bool: ...


class QueueRuns(Protocol):
    """What a run records as it goes: ``store.runs``."""

    def step_started(self, run_id: str, phase: str) -> object: ...

    def step_finished(self, run_id: str, phase: str, outcome: str) -> object: ...

    def append_log(self, run_id: str, text: str) -> object: ...


class QueueEscalations(Protocol):
    """Asking a human and polling for the answer: ``store.escalations``."""

    def open(
        self,
        task_id: str,
        fencing_token: int,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> bool: ...

    def poll(self, task_id: str, fencing_token: int) -> EscalationAnswer | None: ...


class RunnerQueue(Protocol):
    """The Store as a runner sees it. Transient failures raise
    :class:`capataz.errors.Unavailable` (the Store's StoreUnavailable, the remote
    queue's QueueUnavailable), which the runner retries; everything else is fatal."""

    @property
    def runners(self) -> QueueRunners: ...

    @property
    def leases(self) -> QueueLeases: ...

    @property
    def runs(self) -> QueueRuns: ...

    @property
    def escalations(self) -> QueueEscalations: ...

    def sweep(self, *, actor: str = ...) -> list[str]:
        """Rescue expired leases (and tidy up): every runner sweeps."""
        ...

    def metrics(self) -> dict[str, Any]:
        """The queue's figures: an idle runner that exits when idle reads them."""
        ...
