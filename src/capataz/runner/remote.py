"""The runner's queue over HTTP: :class:`RemoteQueue` speaks the control plane's
``/runner`` routes (``capataz serve``) with a runner token, so a runner on another
machine needs the repository and ``capataz.toml`` but no database connection.

Failures split in two. Anything that may go away by itself (connection refused or
reset, a timeout, a server restarting, 429, 5xx) raises :class:`QueueUnavailable`,
which the runner retries with backoff like a database outage. A refused token (401,
403) or a request the server rejects (other 4xx) raises :class:`QueueRefusedError`:
retrying would not help.

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
:meth:`RemoteQueue.is_current`, which the canceller asks every second, uses an answer
younger than ``CONFIRMED_FOR`` instead of asking again."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from capataz.errors import QueueRefusedError, QueueUnavailable, TaskError
from capataz.retry import OUTAGE
from capataz.runner.protocol import (
    BatchRecorded,
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
    Records,
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

__all__ = ["NEEDS_RUNNER_ROLE", "RemoteQueue"]

log = logging.getLogger("capataz.runner")

NEEDS_RUNNER_ROLE = (
    "needs a runner token: capataz token create --role runner, then pass it in "
    "CAPATAZ_TOKEN (or --token-file)"
)
# Unsent steps and log chunks kept per run while the server is away; beyond this the
# oldest go (the server keeps only a log tail anyway).
OUTBOX_LIMIT = 5000
# Records sent in one request (the server takes up to 5000).
BATCH_LIMIT = 1000
# How long the server's word that a lease is held stands in for an is_current request.
CONFIRMED_FOR = 0.75
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
A = TypeVar("A")
_IGNORED: TypeAdapter[object] = TypeAdapter(object)  # an answer whose data is not used


@dataclasses.dataclass
class _Outbox:
    """A run's unacknowledged records, oldest first. ``sending`` keeps sends in order
    (one sender at a time); ``lock`` guards the queue itself and is never held across
    a request, so recording never waits for the network."""

    sending: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    seq: int = 0
    pending: deque[OutboxStep | OutboxLog] = dataclasses.field(default_factory=deque)


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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._client = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )
        self._outboxes: dict[str, _Outbox] = {}
        self._runs: dict[tuple[str, int], str] = {}  # (task, token) -> run, for its outbox
        self._leases: dict[str, tuple[str, int]] = {}  # run -> (task, token)
        # (task, token) -> (when the server was asked, whether the lease was current)
        self._confirmed: dict[tuple[str, int], tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._sender: threading.Thread | None = None

    def close(self) -> None:
        """Stop the sender and close the connections (unsent records are dropped)."""
        self._closed.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=5)
        self._client.close()

    # -- the runner itself --------------------------------------------------------------

    def register_runner(
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
        return self._call("POST", "/runner/register", _RUNNER_ID, body).runner_id

    def runner_heartbeat(self, runner_id: str) -> None:
        self._call("POST", f"/runner/{runner_id}/heartbeat", _RUNNER_ID, _EMPTY)

    def runner_stopped(self, runner_id: str) -> None:
        self._call("POST", f"/runner/{runner_id}/stopped", _RUNNER_ID, _EMPTY)

    # -- leases -------------------------------------------------------------------------

    def claim(
        self,
        runner_id: str,
        lease_seconds: float = 30.0,
        labels: Iterable[str] | None = None,
        *,
        claim_key: str | None = None,
    ) -> ClaimedTask | None:
        body = Claim(
            runner_id=runner_id,
            lease_seconds=lease_seconds,
            labels=None if labels is None else list(labels),
            claim_key=claim_key,
        )
        asked = time.monotonic()
        data = self._call("POST", "/runner/claim", _CLAIMED, body)
        if data is None:
            return None
        claimed = ClaimedTask(**{**data.model_dump(), "labels": tuple(data.labels)})
        with self._lock:
            self._runs[(claimed.id, claimed.fencing_token)] = claimed.run_id
            self._leases[claimed.run_id] = (claimed.id, claimed.fencing_token)
        self._confirm((claimed.id, claimed.fencing_token), True, asked)
        return claimed

    def heartbeat(self, task_id: str, fencing_token: int, lease_seconds: float = 30.0) -> bool:
        body = Heartbeat(fencing_token=fencing_token, lease_seconds=lease_seconds)
        asked = time.monotonic()
        held = self._held("POST", f"/runner/tasks/{task_id}/heartbeat", body)
        self._confirm((task_id, fencing_token), held, asked)
        return held

    def is_current(self, task_id: str, fencing_token: int) -> bool:
        """Whether the lease is still held. The canceller asks every second per running
        task; an answer the server gave about this lease less than ``CONFIRMED_FOR``
        ago (to a heartbeat or to the outbox, which a busy run flushes twice a second)
        is used instead of a request, so a cancel is still noticed within about
        ``1 s + CONFIRMED_FOR``. A lease once lost stays lost (tokens only grow)."""
        lease = (task_id, fencing_token)
        with self._lock:
            known = self._confirmed.get(lease)
        if known is not None and (not known[1] or time.monotonic() - known[0] < CONFIRMED_FOR):
            return known[1]
        asked = time.monotonic()
        params = {"token": fencing_token}
        data = self._call("GET", f"/runner/tasks/{task_id}/current", _CURRENT, params=params)
        self._confirm(lease, data.current, asked)
        return data.current

    def _confirm(self, lease: tuple[str, int], current: bool, asked: float) -> None:
        """Note the server's answer about ``lease`` to a request sent at ``asked``
        (the request's start, so the answer is never taken as fresher than it is)."""
        with self._lock:
            known = self._confirmed.get(lease)
            if known is not None and not known[1]:
                return  # lost is final
            if known is None or asked >= known[0] or not current:
                self._confirmed[lease] = (asked, current)

    def task_secrets(self, task_id: str, fencing_token: int) -> dict[str, str]:
        """The claimed task's secrets, which the server picks from its configuration
        and hands out only under the current lease (used by the pipeline, through
        :func:`capataz.secrets_delivery.remote_source`). Never logged."""
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/secrets"
        return dict(self._call("GET", path, _SECRETS, params=params).values)

    def task_context(self, task_id: str, fencing_token: int) -> dict[str, JsonValue]:
        """What the claimed task receives from its dependencies (``{context}``), picked
        by the server under the current lease (used through
        :class:`capataz.context_store.RemoteContextLink`)."""
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/context"
        return dict(self._call("GET", path, _CONTEXT, params=params).entries)

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
        self._call("POST", f"/runner/tasks/{task_id}/context", _IGNORED, body)

    def release(
        self, task_id: str, fencing_token: int, reason: str, *, delay_seconds: float = 0.0
    ) -> bool:
        self._flush_run(task_id, fencing_token)
        body = Release(fencing_token=fencing_token, reason=reason, delay_seconds=delay_seconds)
        released = self._held("POST", f"/runner/tasks/{task_id}/release", body)
        self._forget(task_id, fencing_token)
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
        self._flush_run(task_id, fencing_token)
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
        accepted = self._held("POST", f"/runner/tasks/{task_id}/complete", body)
        self._forget(task_id, fencing_token)
        return accepted

    def sweep(self, *, actor: str = "sweeper") -> list[str]:
        return self._call("POST", "/runner/sweep", _RESCUED, Sweep(actor=actor)).rescued

    # -- what a run records -------------------------------------------------------------

    def step_started(self, run_id: str, phase: str) -> None:
        self._record(
            run_id, lambda seq: OutboxStep(kind="step", seq=seq, phase=phase, status="started")
        )

    def step_finished(self, run_id: str, phase: str, outcome: str) -> None:
        self._record(
            run_id,
            lambda seq: OutboxStep(
                kind="step", seq=seq, phase=phase, status="finished", outcome=outcome
            ),
        )

    def append_log(self, run_id: str, text: str) -> None:
        if text:
            self._record(run_id, lambda seq: OutboxLog(kind="log", seq=seq, text=text))

    def open_escalation(
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
        return self._held("POST", f"/runner/tasks/{task_id}/escalation", body)

    def poll_escalation(self, task_id: str, fencing_token: int) -> EscalationAnswer | None:
        params = {"token": fencing_token}
        path = f"/runner/tasks/{task_id}/escalation"
        data = self._call("GET", path, _ANSWER, params=params)
        return None if data is None else EscalationAnswer(**data.model_dump())

    # -- idling ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        return self._call("GET", "/runner/metrics", _METRICS).as_dict()

    @property
    def waits_for_ready(self) -> bool:
        """No: an idle remote runner polls ``claim`` with the runner's adaptive backoff."""
        return False

    def wait_for_ready(self, timeout: float) -> bool:
        return False

    # -- the outbox -----------------------------------------------------------------------

    def _record(self, run_id: str, make: Callable[[int], OutboxStep | OutboxLog]) -> None:
        """Queue a step or log chunk of ``run_id`` with the run's next number and let
        the sender deliver it: never blocks on the network."""
        with self._lock:
            box = self._outboxes.setdefault(run_id, _Outbox())
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="outbox", daemon=True)
                self._sender.start()
        with box.lock:
            box.seq += 1
            box.pending.append(make(box.seq))
            if len(box.pending) > OUTBOX_LIMIT:
                box.pending.popleft()
                log.warning("run %s: server away too long; dropped its oldest record", run_id)
        self._wake.set()

    def _send_loop(self) -> None:
        """Deliver every run's outbox, in order; after failures wait capataz's one
        backoff (:data:`capataz.retry.OUTAGE`, jittered) before the next try."""
        failures = 0
        while not self._closed.is_set():
            if failures:
                self._closed.wait(OUTAGE.delay(failures))
            else:
                self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                runs = list(self._outboxes)
            try:
                for run_id in runs:
                    self._flush(run_id)
                failures = 0
            except QueueUnavailable as exc:
                log.debug("outbox: server unavailable (%s); will retry", exc)
                failures += 1
            except Exception:
                log.exception("outbox: could not deliver records; will retry")
                failures += 1

    def _flush(self, run_id: str) -> None:
        """Send ``run_id``'s pending records, all of them in one request (up to
        ``BATCH_LIMIT``), in order; QueueUnavailable leaves them for the next try. A
        batch the server refuses (its run is unknown) is dropped. The answer says
        whether the run's lease is still held, which spares :meth:`is_current` a
        request."""
        with self._lock:
            box = self._outboxes.get(run_id)
            lease = self._leases.get(run_id)
        if box is None:
            return
        with box.sending:
            while True:
                with box.lock:
                    if not box.pending:
                        return
                    batch = list(itertools.islice(box.pending, BATCH_LIMIT))
                asked = time.monotonic()
                path = f"/runner/runs/{run_id}/records"
                try:
                    data = self._call("POST", path, _BATCH, Records(records=batch))
                except TaskError as exc:
                    log.warning("run %s: %d records refused: %s", run_id, len(batch), exc)
                else:
                    if lease is not None:
                        self._confirm(lease, data.current, asked)
                last = batch[-1].seq
                with box.lock:  # drop what was sent (unless the limit dropped it meanwhile)
                    while box.pending and box.pending[0].seq <= last:
                        box.pending.popleft()

    def _flush_run(self, task_id: str, fencing_token: int) -> None:
        with self._lock:
            run_id = self._runs.get((task_id, fencing_token))
        if run_id is not None:
            self._flush(run_id)

    def _forget(self, task_id: str, fencing_token: int) -> None:
        with self._lock:
            run_id = self._runs.pop((task_id, fencing_token), None)
            self._confirmed.pop((task_id, fencing_token), None)
            if run_id is not None:
                self._outboxes.pop(run_id, None)
                self._leases.pop(run_id, None)

    # -- HTTP -------------------------------------------------------------------------------

    def _held(self, method: str, path: str, body: BaseModel) -> bool:
        """A write under a lease: True when done, False when the lease is not (or no
        longer) this runner's (409, the runner treats it as lost)."""
        try:
            self._call(method, path, _IGNORED, body, conflict_ok=True)
        except _Conflict:
            return False
        return True

    def _call(
        self,
        method: str,
        path: str,
        answer: TypeAdapter[A],
        body: BaseModel | None = None,
        *,
        params: dict[str, int] | None = None,
        conflict_ok: bool = False,
    ) -> A:
        """``data`` of the answer to one request, read through ``answer`` (the
        protocol's model of it), or the error its status means."""
        content = None if body is None else body.model_dump_json().encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._client.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TransportError as exc:
            raise QueueUnavailable(
                f"control plane {self.server}: {type(exc).__name__}: {exc}",
                fix="is `capataz serve` running and reachable? the runner keeps retrying",
            ) from None
        status = response.status_code
        if status < 300:
            try:
                return answer.validate_python(_payload(response).get("data"))
            except ValidationError as exc:
                raise QueueRefusedError(
                    f"{method} {path}: not the answer this runner understands: "
                    f"{exc.errors()[0]['msg']}",
                    fix="run the same capataz version on the server and the runners",
                ) from None
        message = _error_message(response)
        if status == 409 and conflict_ok:
            raise _Conflict(message)
        if status in _TRANSIENT_STATUS:
            raise QueueUnavailable(
                f"control plane {self.server} answered {status}: {message}",
                fix="the runner keeps retrying",
            )
        if status in (401, 403):
            raise QueueRefusedError(
                f"control plane {self.server} refused the runner ({status}): {message}",
                fix=NEEDS_RUNNER_ROLE,
            )
        if status in (404, 409):
            raise TaskError(f"{method} {path}: {message}")
        raise QueueRefusedError(f"{method} {path} refused ({status}): {message}")


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
_BATCH = TypeAdapter(BatchRecorded)


class _Conflict(Exception):
    """409 on a write under a lease: the fencing token is stale."""


def _payload(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        raise QueueUnavailable(
            f"{response.request.url.path} answered {response.status_code} without JSON",
            fix="is the URL that of `capataz serve`?",
        ) from None
    if not isinstance(found, dict):
        raise QueueUnavailable(f"{response.request.url.path}: not a capataz answer")
    return found


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase or str(response.status_code)
