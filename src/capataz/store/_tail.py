"""What a write transaction ends with: its audit entries, its events and its wake-ups,
written together just before the commit.

Every state change writes a task or run row and then says so twice: in the audit trail
and in the live event stream. Written as they happen, that is one statement (one round
trip to PostgreSQL) per entry, and on PostgreSQL the first event took the event
stream's ordering lock (``_event_sql``) and held it for the rest of the transaction, so
writers queued on it for as long as their slowest statement. Collected instead, they go
out at the end as a few multi-row statements: audit entries first (PostgreSQL: into
``audit_pending``, no lock; SQLite: chained, one read of the chain's tail), then one
statement that takes the ordering lock and sends the notifications, then the events.
The lock is held only for that last insert and the commit.

A transaction collects when it was opened by ``StoreBase._write``; code writing on a
connection that does not collect (a migration, a test) writes at once, as before.
Nothing in a transaction may read back its own audit entries or events before the
commit; none does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

__all__ = ["Tail", "collecting", "tail_of"]

_KEY = "capataz_tail"


@dataclass
class Tail:
    """What one transaction will write at its end, in the order it was said."""

    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    run_events: list[sa.Insert] = field(default_factory=list)  # INSERT … SELECT, by run id
    ready: bool = False  # wake idle runners at commit (PostgreSQL)

    @property
    def has_events(self) -> bool:
        return bool(self.event_rows or self.run_events)


def tail_of(conn: sa.Connection) -> Tail | None:
    """The transaction's tail when it collects one (else write at once)."""
    tail: Tail | None = conn.info.get(_KEY)
    return tail


@contextmanager
def collecting(conn: sa.Connection) -> Iterator[Tail]:
    """Collect the transaction's audit entries and events while the block runs; the
    caller writes them (``StoreBase._write``) when it ends without an error.
    ``conn.info`` lives as long as the pooled connection, so the tail is removed however
    the block ends."""
    tail = Tail()
    conn.info[_KEY] = tail
    try:
        yield tail
    finally:
        conn.info.pop(_KEY, None)
