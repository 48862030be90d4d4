"""The HTTP connection a remote runner's queue (:mod:`capataz.runner.remote`) shares
among its facades: one client with the runner's token, the mapping of answers to
capataz's errors, the per-run *outbox* of steps and log chunks, and what the server
last said about each lease.

Failures split in two. Anything that may go away by itself (connection refused or
reset, a timeout, a server restarting, 429, 5xx) raises :class:`QueueUnavailable`,
which the runner retries with backoff like a database outage. A refused token (401,
403) or a request the server rejects (other 4xx) raises :class:`QueueRefusedError`:
retrying would not help."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from capataz.errors import QueueRefusedError, QueueUnavailable, TaskError
from capataz.retry import OUTAGE
from capataz.runner.protocol import (
    SWEEPER_HEADER,
    BatchRecorded,
    OutboxLog,
    OutboxStep,
    Records,
)
from capataz.store.records import ClaimedTask

__all__ = ["BATCH_LIMIT", "CONFIRMED_FOR", "IGNORED", "NEEDS_RUNNER_ROLE", "OUTBOX_LIMIT", "Link"]

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
IGNORED: TypeAdapter[object] = TypeAdapter(object)  # an answer whose data is not used
_BATCH = TypeAdapter(BatchRecorded)


@dataclasses.dataclass
class _Outbox:
    """A run's unacknowledged records, oldest first. ``sending`` keeps sends in order
    (one sender at a time); ``lock`` guards the queue itself and is never held across
    a request, so recording never waits for the network."""

    sending: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    seq: int = 0
    pending: deque[OutboxStep | OutboxLog] = dataclasses.field(default_factory=deque)


class Link:
    """The control plane at ``server`` (``http://host:port``), authenticated with a
    runner ``token``. The token goes only into the Authorization header; it is never
    logged."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        # The server said (on a claim's answer) that it sweeps expired leases itself.
        self.server_sweeps = False
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
        self._interrupted = threading.Event()  # a stopping runner: no more long polls
        self._sender: threading.Thread | None = None

    def close(self) -> None:
        """Stop the sender and close the connections (unsent records are dropped)."""
        self._closed.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=5)
        self._client.close()

    def interrupt(self) -> None:
        """The runner is stopping: a long poll in flight answers None now, and later
        ones at once (safe from a signal handler: it only sets an event)."""
        self._interrupted.set()

    def interruptible(
        self, call: Callable[[], A | None], give_back: Callable[[A], object]
    ) -> A | None:
        """``call()`` (a long poll, seconds on the server) in a helper thread, given up
        when :meth:`interrupt` is called: an idle runner sent SIGTERM stops within a
        tenth of a second instead of when its claim answers (up to its wait, 20 s).
        What an abandoned call still gets (a task claimed just as the runner stopped)
        goes to ``give_back`` from the helper thread, so it is released at once
        instead of waiting for its lease to expire. The helper's connection closes
        with the process; the server then gives a waiting claim nothing."""
        if self._interrupted.is_set():
            return None
        lock = threading.Lock()
        done = threading.Event()
        outcome: list[A | None] = []
        failure: list[BaseException] = []
        abandoned = False

        def run() -> None:
            try:
                value = call()
            except BaseException as exc:  # noqa: BLE001  (raised again in the caller)
                with lock:
                    failure.append(exc)
                    done.set()
                return
            with lock:
                if not abandoned:
                    outcome.append(value)
                    done.set()
                    return
            if value is not None:
                try:
                    give_back(value)
                except (QueueUnavailable, QueueRefusedError, TaskError) as exc:
                    # The lease then expires and the sweeper rescues the task.
                    log.warning("could not give back what a stopped claim got: %s", exc)

        threading.Thread(target=run, name="long-poll", daemon=True).start()
        while not done.wait(0.1):
            if self._interrupted.is_set():
                with lock:
                    if not done.is_set():
                        abandoned = True
                        return None
        if failure:
            raise failure[0]
        return outcome[0]

    # -- leases: which run each holds, and what the server last said ---------------------

    def track(self, claimed: ClaimedTask, asked: float) -> None:
        """A claim answered at ``asked``: its run's records go out under its lease, and
        the lease is held."""
        with self._lock:
            self._runs[(claimed.id, claimed.fencing_token)] = claimed.run_id
            self._leases[claimed.run_id] = (claimed.id, claimed.fencing_token)
        self.confirm((claimed.id, claimed.fencing_token), True, asked)

    def known(self, lease: tuple[str, int]) -> bool | None:
        """What the server said about ``lease`` less than ``CONFIRMED_FOR`` ago (a
        lease once lost stays lost: tokens only grow), or None: ask it."""
        with self._lock:
            found = self._confirmed.get(lease)
        if found is not None and (not found[1] or time.monotonic() - found[0] < CONFIRMED_FOR):
            return found[1]
        return None

    def confirm(self, lease: tuple[str, int], current: bool, asked: float) -> None:
        """Note the server's answer about ``lease`` to a request sent at ``asked``
        (the request's start, so the answer is never taken as fresher than it is)."""
        with self._lock:
            known = self._confirmed.get(lease)
            if known is not None and not known[1]:
                return  # lost is final
            if known is None or asked >= known[0] or not current:
                self._confirmed[lease] = (asked, current)

    def forget(self, task_id: str, fencing_token: int) -> None:
        """The lease ended (completed or released): drop its outbox and what is known
        about it."""
        with self._lock:
            run_id = self._runs.pop((task_id, fencing_token), None)
            self._confirmed.pop((task_id, fencing_token), None)
            if run_id is not None:
                self._outboxes.pop(run_id, None)
                self._leases.pop(run_id, None)

    # -- the outbox -----------------------------------------------------------------------

    def record(self, run_id: str, make: Callable[[int], OutboxStep | OutboxLog]) -> None:
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
        whether the run's lease is still held, which spares ``leases.is_current`` a
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
                    data = self.call("POST", path, _BATCH, Records(records=batch))
                except TaskError as exc:
                    log.warning("run %s: %d records refused: %s", run_id, len(batch), exc)
                else:
                    if lease is not None:
                        self.confirm(lease, data.current, asked)
                last = batch[-1].seq
                with box.lock:  # drop what was sent (unless the limit dropped it meanwhile)
                    while box.pending and box.pending[0].seq <= last:
                        box.pending.popleft()

    def flush_lease(self, task_id: str, fencing_token: int) -> None:
        """Send what the run of this lease recorded before its ending is reported."""
        with self._lock:
            run_id = self._runs.get((task_id, fencing_token))
        if run_id is not None:
            self._flush(run_id)

    # -- HTTP -------------------------------------------------------------------------------

    def held(self, method: str, path: str, body: BaseModel) -> bool:
        """A write under a lease: True when done, False when the lease is not (or no
        longer) this runner's (409, the runner treats it as lost)."""
        try:
            self.call(method, path, IGNORED, body, conflict_ok=True)
        except _Conflict:
            return False
        return True

    def call(
        self,
        method: str,
        path: str,
        answer: TypeAdapter[A],
        body: BaseModel | None = None,
        *,
        params: Mapping[str, int | float] | None = None,
        conflict_ok: bool = False,
        waits: float = 0.0,
    ) -> A:
        """``data`` of the answer to one request, read through ``answer`` (the
        protocol's model of it), or the error its status means. ``waits``: seconds the
        server may hold the request (a long poll), added to the read timeout."""
        content = None if body is None else body.model_dump_json().encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        timeout = httpx.Timeout(self.timeout + waits, connect=min(self.timeout, 5.0))
        try:
            response = self._client.request(
                method, path, content=content, headers=headers, params=params, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise QueueUnavailable(
                f"control plane {self.server}: {type(exc).__name__}: {exc}",
                fix="is `capataz serve` running and reachable? the runner keeps retrying",
            ) from None
        status = response.status_code
        if response.headers.get(SWEEPER_HEADER) == "on":
            self.server_sweeps = True
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
