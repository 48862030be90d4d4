"""``store.events``: reading the live event stream (``GET /events``, ``capataz
watch``) and dropping old events. Events are written by every other facade, in the
transaction of the change they describe (``StoreBase._event``, over ``_event_sql``)."""

from __future__ import annotations

from datetime import datetime

from capataz.events import EventRecord
from capataz.store import _event_sql
from capataz.store._base import StoreBase

__all__ = ["Events"]


class Events(StoreBase):
    """The event stream, read by id: a reader resumes after the last id it saw."""

    def after(
        self,
        after: int,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        types: frozenset[str] | None = None,
        limit: int = 500,
    ) -> list[EventRecord]:
        """Events with an id above ``after``, oldest first, optionally of one task, one
        run or some types."""
        with self._read() as conn:
            return _event_sql.read_after(
                conn, after, task_id=task_id, run_id=run_id, types=types, limit=limit
            )

    def last_id(self) -> int:
        """The newest event's id (0 when there is none): where a new stream starts."""
        with self._read() as conn:
            return _event_sql.last_id(conn)

    @property
    def waits_for_events(self) -> bool:
        """Whether :meth:`wait_for_events` blocks on PostgreSQL's LISTEN (else there is
        nothing to wait on: SQLite's readers poll)."""
        return self._shared.events_listener is not None

    def wait_for_events(self, timeout: float) -> bool:
        """PostgreSQL: until a transaction that wrote events commits (True) or
        ``timeout`` seconds pass (False). A hint: read :meth:`after` either way."""
        listener = self._shared.events_listener
        if listener is None:
            return False
        return listener.wait(timeout)

    def prune(self, before: datetime) -> int:
        """Drop events older than ``before`` (the sweepers' tidy-up); how many went."""
        with self._write() as conn:
            return _event_sql.prune(conn, before)
