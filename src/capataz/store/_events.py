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

    def prune(self, before: datetime) -> int:
        """Drop events older than ``before`` (the sweepers' tidy-up); how many went."""
        with self._write() as conn:
            return _event_sql.prune(conn, before)
