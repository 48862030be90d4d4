"""One reader of the events table per server process, fanned out to every ``GET
/events`` stream (:class:`EventHub`).

Fifty dashboards on a server must not mean fifty pollers on the database. A single
thread reads the events after the last id it has seen when woken (PostgreSQL: the
NOTIFY every transaction that writes events sends, on the store's own LISTEN
connection, or every ``PG_TICK`` seconds; SQLite, where other processes cannot notify:
every ``interval`` seconds while some stream listens), every ``IDLE_INTERVAL`` seconds
while none does (so its cursor never goes stale), and hands each batch to the event
loop, which puts it on every connected stream's queue; each stream filters by task,
run and type in memory. Reading the table (a notification is only a hint) makes it
work whichever process wrote the event: the server, a database runner, another
server. Ids commit in id order (``_event_sql``: an advisory lock on PostgreSQL, the
single writer on SQLite), so "after the last id seen" never skips an event that
committed late.

A stream that resumes before the hub's cursor reads its own backlog from the store at
connect (bounded pages), then joins the hub without gaps or duplicates (see
:meth:`EventHub.join`). A stream whose queue fills up (a client that does not read) is
dropped rather than let it hold the others back; the client reconnects with
``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from capataz.errors import Unavailable
from capataz.events import EventRecord
from capataz.store import Store

__all__ = ["EventHub", "Subscription"]

log = logging.getLogger("capataz.api")

INTERVAL = 0.1  # seconds between reads while streams listen (delivery latency ~ this)
IDLE_INTERVAL = 1.0  # while none listens: keeps the cursor fresh for the next one
PG_TICK = 1.0  # PostgreSQL: a read at least this often, NOTIFY or not
PAGE = 500
QUEUE_BATCHES = 256  # a stream this many batches behind is dropped


class Subscription:
    """One stream's place on the hub: a queue of batches, and whether it overflowed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[EventRecord]] = asyncio.Queue(QUEUE_BATCHES)
        self.overflowed = False


class EventHub:
    """The single event reader of a server process (see the module)."""

    def __init__(self, store: Store, interval: float = INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[Subscription] = set()
        self._listening = 0  # streams joined or joining (read by the thread)
        self._primed = asyncio.Event()  # the hub knows where the table ends
        self.published = 0  # every event up to this id was handed to the subscribers
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        # Reads of the events table, by who made them (for /metrics and tests).
        self.hub_reads = 0
        self.client_reads = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def streams(self) -> int:
        """How many streams are connected right now."""
        return self._listening

    async def join(
        self,
        after: int,
        read: Callable[[int], Awaitable[list[EventRecord]]],
        send: Callable[[list[EventRecord]], Awaitable[None]],
    ) -> Subscription:
        """Subscribe a stream that has sent everything up to ``after``.

        ``read(position)`` is the stream's own filtered read of the store (one page
        after ``position``); ``send`` delivers a page to the client. The stream first
        catches up from the store until its position reaches the hub's ``published``
        cursor, then subscribes in the same step on the event loop (no await between
        the check and the subscription), so the hub's next batch starts right after
        what the store gave it: no gap. Ids at or below what was sent are dropped by
        the caller: no duplicate. Call :meth:`leave` when the stream ends."""
        self._listening += 1
        try:
            await self._primed.wait()
            position = after
            while True:
                target = self.published
                if position >= target:
                    break
                page = await read(position)
                self.client_reads += 1
                if page:
                    await send(page)
                # A short page: the store had everything up to ``target`` (committed
                # before this read); a full one: go on after its last event.
                position = max(position, target) if len(page) < PAGE else page[-1].id
        except BaseException:
            self._listening -= 1
            raise
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def leave(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        self._listening -= 1

    def _publish(self, records: list[EventRecord], cursor: int) -> None:
        """On the event loop: hand a batch to every subscriber."""
        self.published = cursor
        self._primed.set()
        if not records:
            return
        for subscription in list(self._subscribers):
            try:
                subscription.queue.put_nowait(records)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscribers.discard(subscription)

    def _run(self) -> None:
        """The one reader: primes its cursor at the end of the table, then reads what
        follows it, fast while streams listen and slowly while none does."""
        cursor: int | None = None
        while not self._closed.is_set():
            try:
                if cursor is None:
                    cursor = self._store.events.last_id()
                    self.hub_reads += 1
                    self._hand([], cursor)
                    continue
                self._wait()
                records = self._store.events.after(cursor, limit=PAGE)
                self.hub_reads += 1
                while records:
                    cursor = records[-1].id
                    self._hand(records, cursor)
                    if len(records) < PAGE:
                        break
                    records = self._store.events.after(cursor, limit=PAGE)
                    self.hub_reads += 1
            except Unavailable as exc:
                log.warning("event hub: %s", exc)
                self._closed.wait(1.0)
            except Exception:
                log.exception("event hub failed a read; will retry")
                self._closed.wait(1.0)

    def _wait(self) -> None:
        """Until the next read. PostgreSQL: the NOTIFY of a transaction that wrote
        events, or ``PG_TICK`` (notifications are hints; one sent before the LISTEN
        connection opened is caught by the tick). SQLite, where other processes cannot
        notify: ``interval`` while streams listen."""
        events = self._store.events
        if events.waits_for_events:
            events.wait_for_events(PG_TICK if self._listening else IDLE_INTERVAL)
        else:
            self._closed.wait(self._interval if self._listening else IDLE_INTERVAL)

    def _hand(self, records: list[EventRecord], cursor: int) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                self._loop.call_soon_threadsafe(self._publish, records, cursor)
