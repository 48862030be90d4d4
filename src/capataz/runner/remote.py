"""The runner's queue over HTTP: :class:`RemoteQueue` speaks the control plane's
``/runner`` routes (``capataz serve``) with a runner token, so a runner on another
machine needs the repository and ``capataz.toml`` but no database connection. It has
the Store's shape (:class:`capataz.runner.queue.RunnerQueue`): facades ``runners``,
``leases``, ``runs`` and ``escalations`` over one shared :class:`Link` (the HTTP
client, the outbox, what the server said about each lease; errors are mapped there).

Retries are safe because every write is idempotent on the server: a claim carries the
runner's ``claim_key`` (a retried claim returns the task the lost answer held), a
repeated complete or release of the same lease is accepted again, heartbeats and reads
are naturally repeatable, and what a run records as it goes (steps and log chunks)
leaves through a per-run *outbox*: numbered (``seq`` 1, 2, 3…), sent in order by a
background sender thread, everything pending in one request (one transaction on the
server), kept until the server acknowledges them and dropped by the server when it has
already stored that number. So the pipeline never waits on the network to record a
line, an outage delays the log instead of losing it, and the run's last lines are sent
before its result (``complete`` empties the outbox first).

Requests per task are kept few, since the server's throughput bounds the runners':
the outbox's answer (and every heartbeat's) says whether the lease is still held, and
:meth:`RemoteLeases.is_current`, which the canceller asks every second, uses an answer
younger than ``CONFIRMED_FOR`` instead of asking again."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, JsonValue, TypeAdapter

from capataz.runner.link import IGNORED, NEEDS_RUNNER_ROLE, Link
from capataz.runner.protocol import (
    Claim,
    ClaimedTaskOut,
    Complete,
    ContextEntries,
    Current,
    Escalate,
    EscalationAnswerOut,
    Heartbeat,
    OutboxLog,
    OutboxStep,
    Publish,
    QueueMetrics,
    Register,
    Release,
    Rescued,
    RunDetailsIn,
    RunnerIdOut,
    Sweep,
    TaskSecrets,
)
from capataz.store.records import ClaimedTask, EscalationAnswer, RunDetails
from capataz.store.statuses import TaskState
from capataz.units import Budget

__all__ = [
    "CLAIM_WAIT",
    "NEEDS_RUNNER_ROLE",
    "RemoteEscalations",
    "RemoteLeases",
    "RemoteQueue",
    "RemoteRunners",
    "RemoteRuns",
]

# Seconds an idle remote runner's claim waits on the server for work (the server cuts
# longer waits to its own cap, 30 s). A SIGTERM does not wait for it: the stopping
# runner gives the claim up (``RemoteQueue.interrupt``).
CLAIM_WAIT = 20.0


class RemoteQueue:
    """A :class:`capataz.runner.queue.RunnerQueue` over the control plane at
    ``server`` (``http://host:port``), authenticated with a runner ``token``. The
    token goes only into the Authorization header; it is never logged."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 10.0,
        claim_wait: float = CLAIM_WAIT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._link = Link(server, token, timeout=timeout, transport=transport)
        self.server = self._link.server
        self.runners = RemoteRunners(self._link)
        self.leases = RemoteLeases(self._link, claim_wait=claim_wait)
        self.runs = RemoteRuns(self._link)
        self.escalations = RemoteEscalations(self._link)

    def close(self) -> None:
        """Stop the sender and close the connections (unsent records are dropped)."""
        self._link.close()

    def interrupt(self) -> None:
        """The runner is stopping: give up a long-poll claim in flight (it answers None
        now) and wait in no later one. Safe from a signal handler."""
        self._link.interrupt()

    def sweep(self, *, actor: str = "sweeper") -> list[str]:
        """Ask the server to sweep, unless it said it sweeps on its own (then an idle
        runner saves the request: the runner's sweep loop would only repeat it)."""
        if self._link.server_sweeps:
            return []
        return self._link.call("POST", "/runner/sweep", _RESCUED, Sweep(actor=actor)).rescued

    def metrics(self) -> dict[str, Any]:
        return self._link.call("GET", "/runner/metrics", _METRICS).as_dict()

    # -- what the pipeline asks of a remote queue (not part of RunnerQueue) -------------

    def task_secrets(self, task_id: str, fencing_token: int) -> dict[str, str]:
        """The claimed task's secrets, which the server picks from its configuration
        and hands out only under the current lease (used by the pipeline, through
        :func:`capataz.secrets_delivery.remote_source`). Never logged."""
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/secrets"
        return dict(self._link.call("GET", path, _SECRETS, params=params).values)

    def task_context(self, task_id: str, fencing_token: int) -> dict[str, JsonValue]:
        """What the claimed task receives from its dependencies (``{context}``), picked
        by the server under the current lease (used through
        :class:`capataz.context_store.RemoteContextLink`)."""
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/context"
        return dict(self._link.call("GET", path, _CONTEXT, params=params).entries)

    def publish_context(
        self,
        task_id: str,
        fencing_token: int,
        entries: Mapping[str, Any],
        ttl_seconds: float | None = None,
    ) -> None:
        """Store what a landed run published; repeatable (the same entries again only
        rewrite them), so a retry after a lost answer is safe."""
        body = Publish(fencing_token=fencing_token, entries=dict(entries), ttl_seconds=ttl_seconds)
        self._link.call("POST", f"/runner/tasks/{task_id}/context", IGNORED, body)


class RemoteRunners:
    """``queue.runners``: the runner's own registration, over ``/runner/{id}/…``."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def register(
        self,
        name: str,
        *,
        labels: Sequence[str] = (),
        hostname: str,
        pid: int,
        concurrency: int,
    ) -> str:
        body = Register(
            name=name, labels=list(labels), hostname=hostname, pid=pid, concurrency=concurrency
        )
        return self._link.call("POST", "/runner/register", _RUNNER_ID, body).runner_id

    def heartbeat(self, runner_id: str) -> None:
        self._link.call("POST", f"/runner/{runner_id}/heartbeat", _RUNNER_ID, _EMPTY)

    def mark_stopped(self, runner_id: str) -> None:
        self._link.call("POST", f"/runner/{runner_id}/stopped", _RUNNER_ID, _EMPTY)


class RemoteLeases:
    """``queue.leases``: claims and the writes under a lease; an ending is reported
    after the run's outbox is empty."""

    def __init__(self, link: Link, *, claim_wait: float = CLAIM_WAIT) -> None:
        self._link = link
        self._claim_wait = claim_wait

    @property
    def claim_wait(self) -> float:
        """How long an idle runner's claim lets the server hold it (long poll)."""
        return self._claim_wait

    def claim(
        self,
        runner_id: str,
        lease_seconds: float = 30.0,
        labels: Iterable[str] | None = None,
        *,
        claim_key: str | None = None,
        wait: float = 0.0,
    ) -> ClaimedTask | None:
        """With ``wait``, the server holds the request until a task is ready or the
        wait is over (``?wait=``; a server without long polls answers at once, and the
        runner's loop then polls as before). The read timeout grows by the wait."""
        body = Claim(
            runner_id=runner_id,
            lease_seconds=lease_seconds,
            labels=None if labels is None else list(labels),
            claim_key=claim_key,
        )
        if wait <= 0:
            return self._claim(body, 0.0)
        # A long poll: given up when the runner stops (RemoteQueue.interrupt); a task it
        # still got is released at once.
        return self._link.interruptible(
            lambda: self._claim(body, wait),
            lambda late: self.release(late.id, late.fencing_token, "its runner stopped"),
        )

    def _claim(self, body: Claim, wait: float) -> ClaimedTask | None:
        asked = time.monotonic()
        params = {"wait": wait} if wait > 0 else None
        data = self._link.call("POST", "/runner/claim", _CLAIMED, body, params=params, waits=wait)
        if data is None:
            return None
        claimed = ClaimedTask(
            **{
                **data.model_dump(),
                "labels": tuple(data.labels),
                "budget": Budget.from_json(data.budget.model_dump() if data.budget else None),
            }
        )
        self._link.track(claimed, asked)
        return claimed

    def heartbeat(self, task_id: str, fencing_token: int, lease_seconds: float = 30.0) -> bool:
        body = Heartbeat(fencing_token=fencing_token, lease_seconds=lease_seconds)
        asked = time.monotonic()
        held = self._link.held("POST", f"/runner/tasks/{task_id}/heartbeat", body)
        self._link.confirm((task_id, fencing_token), held, asked)
        return held

    def is_current(self, task_id: str, fencing_token: int) -> bool:
        """Whether the lease is still held. The canceller asks every second per running
        task; an answer the server gave about this lease less than ``CONFIRMED_FOR``
        ago (to a heartbeat or to the outbox, which a busy run flushes twice a second)
        is used instead of a request, so a cancel is still noticed within about
        ``1 s + CONFIRMED_FOR``. A lease once lost stays lost (tokens only grow)."""
        lease = (task_id, fencing_token)
        known = self._link.known(lease)
        if known is not None:
            return known
        asked = time.monotonic()
        params = {"token": fencing_token}
        data = self._link.call("GET", f"/runner/tasks/{task_id}/current", _CURRENT, params=params)
        self._link.confirm(lease, data.current, asked)
        return data.current

    def release(
        self, task_id: str, fencing_token: int, reason: str, *, delay_seconds: float = 0.0
    ) -> bool:
        self._link.flush_lease(task_id, fencing_token)
        body = Release(fencing_token=fencing_token, reason=reason, delay_seconds=delay_seconds)
        released = self._link.held("POST", f"/runner/tasks/{task_id}/release", body)
        self._link.forget(task_id, fencing_token)
        return released

    def complete(
        self,
        task_id: str,
        fencing_token: int,
        state: TaskState | str,
        reason: str | None = None,
        *,
        decision: str | None = None,
        actor: str | None = None,
        details: RunDetails | None = None,
    ) -> bool:
        """Report the result after the run's last steps and log lines are in."""
        self._link.flush_lease(task_id, fencing_token)
        body = Complete(
            fencing_token=fencing_token,
            state=TaskState(state),
            reason=reason,
            decision=decision,
            actor=actor,
            details=(
                RunDetailsIn.model_validate(dataclasses.asdict(details))
                if details is not None
                else None
            ),
        )
        accepted = self._link.held("POST", f"/runner/tasks/{task_id}/complete", body)
        self._link.forget(task_id, fencing_token)
        return accepted

    @property
    def waits_for_ready(self) -> bool:
        """No: an idle remote runner waits inside its claim (:attr:`claim_wait`)."""
        return False

    def wait_for_ready(self, timeout: float) -> bool:
        return False


class RemoteRuns:
    """``queue.runs``: steps and log chunks go into the run's outbox, never waiting on
    the network (see the module's docstring)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def step_started(self, run_id: str, phase: str) -> None:
        self._link.record(
            run_id, lambda seq: OutboxStep(kind="step", seq=seq, phase=phase, status="started")
        )

    def step_finished(self, run_id: str, phase: str, outcome: str) -> None:
        self._link.record(
            run_id,
            lambda seq: OutboxStep(
                kind="step", seq=seq, phase=phase, status="finished", outcome=outcome
            ),
        )

    def append_log(self, run_id: str, text: str) -> None:
        if text:
            self._link.record(run_id, lambda seq: OutboxLog(kind="log", seq=seq, text=text))


class RemoteEscalations:
    """``queue.escalations``: asking a human under the lease, polling for the answer."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def open(
        self,
        task_id: str,
        fencing_token: int,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        body = Escalate(
            fencing_token=fencing_token,
            reason=reason,
            details=None if details is None else dict(details),
        )
        return self._link.held("POST", f"/runner/tasks/{task_id}/escalation", body)

    def poll(self, task_id: str, fencing_token: int) -> EscalationAnswer | None:
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/escalation"
        data = self._link.call("GET", path, _ANSWER, params=params)
        return None if data is None else EscalationAnswer(**data.model_dump())


class _Empty(BaseModel):
    """A request without fields (``{}``)."""


_EMPTY = _Empty()
_RUNNER_ID = TypeAdapter(RunnerIdOut)
_CLAIMED = TypeAdapter(ClaimedTaskOut | None)
_CURRENT = TypeAdapter(Current)
_SECRETS = TypeAdapter(TaskSecrets)
_CONTEXT = TypeAdapter(ContextEntries)
_RESCUED = TypeAdapter(Rescued)
_ANSWER = TypeAdapter(EscalationAnswerOut | None)
_METRICS = TypeAdapter(QueueMetrics)
