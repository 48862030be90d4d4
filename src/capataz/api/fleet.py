"""What ``capataz serve`` does on its own for a fleet of remote runners: wake the
long-poll claims waiting for work (:class:`ReadyHub`) and sweep expired leases
(:class:`ServerSweeper`), so idle runners neither hammer the API nor have to keep the
queue's rescue going themselves.

One wake-up per server process, fanned out: a single thread waits on the store's
store (PostgreSQL: the store's one LISTEN connection, woken by the NOTIFY of every
transaction that makes a task ready; SQLite, where other processes cannot notify: a
read of the ready tasks' fingerprint every ``SQLITE_WATCH`` seconds) and, when woken or
every ``tick`` seconds (on PostgreSQL tasks that become due by time notify nobody),
wakes every waiting request at once. A
waiting request holds neither a thread nor a database connection: it awaits an
``asyncio.Event``. Wake-ups are hints; each woken request claims, and one that lost
the race waits again until its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

from capataz.errors import Unavailable
from capataz.store import Store

__all__ = ["ReadyHub", "ServerSweeper", "running"]

log = logging.getLogger("capataz.api")

# SQLite: how often the hub reads the ready tasks' fingerprint while claims wait (one
# small read per server process, whatever the number of waiting runners).
SQLITE_WATCH = 0.1


class ReadyHub:
    """Wakes the requests waiting for a task to become ready (see the module)."""

    def __init__(self, store: Store, tick: float) -> None:
        self._store = store
        self._tick = tick
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._waiters = 0
        self._wanted = threading.Event()  # some request is waiting: the thread listens
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple[int, datetime | None] | None = None
        # Claims answered by this process, by how they ended (for /metrics and tests).
        self.claims: Counter[str] = Counter()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, name="ready-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def waiting(self) -> int:
        """How many requests wait for work right now."""
        return self._waiters

    def generation(self) -> asyncio.Event:
        """The event the next wake-up sets: take it *before* trying to claim, so a task
        made ready between the claim and the wait is not missed."""
        return self._event

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Until ``event`` is set (a wake-up) or ``timeout`` seconds pass."""
        self._waiters += 1
        self._wanted.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._waiters -= 1

    def wake(self) -> None:
        """Wake every waiting request (called on the event loop)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _listen(self) -> None:
        """The one waiter on the store: wakes the requests on a notification and on
        every tick, and sleeps while no request waits."""
        last = time.monotonic()
        while not self._closed.is_set():
            if self._waiters == 0:
                self._wanted.clear()  # before the second look: a new waiter sets it after
                if self._waiters == 0:
                    self._wanted.wait(self._tick)
                last = time.monotonic()
                continue
            woken = False
            try:
                woken = self._woken()
            except Unavailable as exc:
                log.warning("ready hub: %s", exc)
                self._closed.wait(min(self._tick, 1.0))
            now = time.monotonic()
            if (woken or now - last >= self._tick) and self._loop is not None:
                last = now
                with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                    self._loop.call_soon_threadsafe(self.wake)

    def _woken(self) -> bool:
        """PostgreSQL: the store's LISTEN (up to a tick). SQLite: whether the ready
        tasks' fingerprint changed in the last ``SQLITE_WATCH`` seconds."""
        leases = self._store.leases
        if leases.waits_for_ready:
            return leases.wait_for_ready(self._tick)
        self._closed.wait(SQLITE_WATCH)
        seen = leases.ready_fingerprint()
        changed = seen != self._seen
        self._seen = seen
        return changed


class ServerSweeper:
    """``Store.sweep`` every ``interval`` seconds in a thread of the server, so rescue
    does not depend on runners calling ``/runner/sweep``. Safe with several servers
    (and sweeping runners) on one database: each expired row is taken by one sweeper
    only (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite)."""

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="server-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                rescued = self._store.sweep(actor="sweeper:server")
                self.rounds += 1
            except Unavailable as exc:
                log.warning("server sweeper: %s; will retry", exc)
                continue
            except Exception:
                log.exception("server sweeper failed; will retry")
                continue
            if rescued:
                log.info("server sweeper: rescued %s", ", ".join(rescued))


@contextlib.asynccontextmanager
async def running(hub: ReadyHub, sweeper: ServerSweeper) -> AsyncIterator[None]:
    """Both for the app's lifespan, stopped cleanly on shutdown."""
    hub.start()
    sweeper.start()
    try:
        yield
    finally:
        await asyncio.to_thread(sweeper.stop)
        await asyncio.to_thread(hub.stop)
