"""The event hub's handover and overflow, on the event loop with a stand-in store: a
stream joining behind the hub's cursor catches up from its own reads and then takes
the hub's batches with nothing missed or repeated; a stream that does not drain its
queue is dropped without holding back the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from capataz.api import event_hub
from capataz.api.event_hub import EventHub
from capataz.events import EventRecord
from capataz.store import Store


def _record(n: int) -> EventRecord:
    return EventRecord(
        id=n, type="task.created", at=datetime.now(UTC), task_id=f"t{n}", run_id=None, data={}
    )


def _hub() -> EventHub:
    return EventHub(cast(Store, object()))  # the thread is never started here


def test_a_stream_behind_the_cursor_catches_up_then_takes_the_hubs_batches() -> None:
    async def scenario() -> list[int]:
        hub = _hub()
        table = [_record(n) for n in range(1, 1201)]  # more than two pages of backlog
        hub._publish(table[:1100], 1100)  # the hub is at 1100; no subscriber yet
        sent: list[int] = []

        async def read(position: int) -> list[EventRecord]:
            return [r for r in table if r.id > position][: event_hub.PAGE]

        async def send(page: list[EventRecord]) -> None:
            sent.extend(r.id for r in page if r.id > (sent[-1] if sent else 5))

        subscription = await hub.join(5, read, send)
        assert hub.streams == 1
        hub._publish(table[1100:], 1200)  # what the hub reads next
        batch = subscription.queue.get_nowait()
        sent.extend(r.id for r in batch if r.id > sent[-1])
        hub.leave(subscription)
        assert hub.streams == 0
        return sent

    assert asyncio.run(scenario()) == list(range(6, 1201))


def test_a_stream_that_does_not_drain_is_dropped_and_the_others_go_on() -> None:
    async def scenario() -> tuple[Any, ...]:
        hub = _hub()
        hub._publish([], 0)

        async def nothing(_: int) -> list[EventRecord]:
            return []

        async def ignore(_: list[EventRecord]) -> None:
            return None

        slow = await hub.join(0, nothing, ignore)
        fast = await hub.join(0, nothing, ignore)
        for n in range(1, event_hub.QUEUE_BATCHES + 2):
            hub._publish([_record(n)], n)
            if not fast.queue.empty():
                fast.queue.get_nowait()
        return slow.overflowed, fast.overflowed, slow in hub._subscribers, hub.published

    assert asyncio.run(scenario()) == (True, False, False, event_hub.QUEUE_BATCHES + 1)
