"""What every part of :class:`capataz.store.manager.Store` shares: the engine, the
clock, transactions, audit appends and wake-up notifications. The Store is assembled
from mixins (``_leasing``, ``_runners``, ``_runs``, ``_escalations``, ``_tokens``,
``_secrets``) that all build on this base, so each file stays small while one class
still owns all the SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.events import EventType
from capataz.store import _events
from capataz.store import audit as audit_log
from capataz.store.engine import READ_ONLY
from capataz.store.errors import NoSuchTaskError

__all__ = ["READY_CHANNEL", "StoreBase", "no_task"]

# PostgreSQL channel that carries "a task became ready" to idle runners.
READY_CHANNEL = "capataz_ready"
_NOTIFY = sa.select(sa.func.pg_notify(READY_CHANNEL, ""))


def no_task(task_id: str) -> NoSuchTaskError:
    return NoSuchTaskError(f"no task {task_id}", fix="`capataz task list` shows the task ids")


class StoreBase:
    engine: Engine
    clock: Callable[[], datetime]
    _postgres: bool

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    def _audit(
        self, conn: sa.Connection, actor: str, action: str, subject: str, **payload: Any
    ) -> None:
        audit_log.append(
            conn, at=self.clock(), actor=actor, action=action, subject=subject, payload=payload
        )

    def _event(
        self,
        conn: sa.Connection,
        kind: EventType,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        **data: Any,
    ) -> None:
        """Append to the live event stream in this transaction (see ``_events``)."""
        _events.emit(conn, kind, at=self.clock(), task_id=task_id, run_id=run_id, **data)

    def _notify_ready(self, conn: sa.Connection) -> None:
        """Wake idle runners when this transaction commits (PostgreSQL only; on SQLite
        runners poll). Call it in every transaction that makes a task ready."""
        if self._postgres:
            conn.execute(_NOTIFY)
