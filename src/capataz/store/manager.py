"""The Store: the one owner of capataz's SQL. Everything else asks it.

Every operation is one short transaction, and every state change in it appends an
audit entry in that same transaction, so the audit trail and the tables can never
disagree. On SQLite each write transaction starts with BEGIN IMMEDIATE (see engine.py),
which serialises writers; on PostgreSQL rows are locked explicitly (FOR UPDATE, SKIP
LOCKED where another runner may simply take the next row).

The operations live in facades, one per area, reached as attributes so that no class
carries dozens of methods and a call says what it is about (``store.tasks.add``,
``store.leases.claim``):

=====================  ===================================================  ==================
attribute              what it owns                                         module
=====================  ===================================================  ==================
``store.tasks``        adding, reading, cancelling, requeueing tasks        ``_tasks``
``store.leases``       claims, heartbeats, reports, give-backs, rescues     ``_leases``
``store.runners``      runner registrations, liveness, what each holds      ``_runners``
``store.runs``         steps, the log tail, reading runs back               ``_runs``
``store.escalations``  questions to humans and their answers                ``_escalations``
``store.tokens``       the API's bearer tokens                              ``_tokens``
``store.secrets``      the vault's encrypted secrets                        ``_secrets``
``store.context``      the context store's encrypted entries                ``_context``
``store.events``       reading the live event stream                        ``_events``
``store.audit``        verifying and exporting the audit chain              ``_audit``
``store.directives``   the planner's proposals, applied or rejected         ``_directives``
=====================  ===================================================  ==================

All of them share one :class:`capataz.store._base.Shared` (engine, clock, dialect). The
Store itself keeps what spans areas: opening and closing, the sweepers' rounds
(:meth:`Store.sweep`, :meth:`Store.tidy`) and the runbook's figures
(:meth:`Store.metrics`). Modules ending in ``_sql`` hold statements and row helpers
with no transaction of their own, which the facades compose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.models import utcnow
from capataz.store._audit import AuditTrail
from capataz.store._base import Shared, StoreBase
from capataz.store._context import ContextEntries
from capataz.store._directives import Directives
from capataz.store._escalations import Escalations
from capataz.store._events import Events
from capataz.store._leases import Leases
from capataz.store._runners import Runners, online_clause
from capataz.store._runs import Runs
from capataz.store._secrets import Secrets
from capataz.store._tasks import Tasks
from capataz.store._tokens import Tokens
from capataz.store.engine import create_engine_for
from capataz.store.migrate import upgrade
from capataz.store.schema import UTCDateTime, runners, runs, tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["Store"]

# Sweepers tidy (silent runners, old events) at most this often per process.
TIDY_SECONDS = 10.0


class Store(StoreBase):
    """Tasks, leases, runners, runs and their audit trail in one database (SQLite or
    PostgreSQL), one facade per area (see the module's table)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        retry_base_seconds: float = 2.0,
        retry_cap_seconds: float = 300.0,
    ) -> None:
        shared = Shared(engine, clock)
        super().__init__(shared)
        self.tasks = Tasks(shared)
        self.leases = Leases(
            shared, retry_base_seconds=retry_base_seconds, retry_cap_seconds=retry_cap_seconds
        )
        self.runners = Runners(shared)
        self.runs = Runs(shared)
        self.escalations = Escalations(shared)
        self.tokens = Tokens(shared)
        self.secrets = Secrets(shared)
        self.context = ContextEntries(shared)
        self.events = Events(shared)
        self.audit = AuditTrail(shared)
        self.directives = Directives(shared)
        self._tidied_at = float("-inf")

    @classmethod
    def open(cls, url: str, *, pool: int | None = None, **options: Any) -> Store:
        """Connect to ``url`` and bring its schema up to date (capataz migrates on start,
        under a lock, see ``migrate``); a database newer than this code is refused.
        ``pool``: keep up to that many connections open and open no more (a server
        sizes it to its worker threads, so none waits for a connection and none is
        opened and closed per request); default SQLAlchemy's 5, plus 10 opened and
        closed again under load."""
        sizing = {} if pool is None else {"pool_size": pool, "max_overflow": 0}
        engine = create_engine_for(url, **sizing)
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()  # a refused or unreachable database leaves no pool behind
            raise
        return cls(engine, **options)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine every facade shares (for tests and benchmarks that
        look at the tables directly)."""
        return self._shared.engine

    @property
    def clock(self) -> Callable[[], datetime]:
        """What every facade takes as "now"."""
        return self._shared.clock

    def close(self) -> None:
        self._shared.close()

    # -- the sweepers' round -----------------------------------------------------------

    def sweep(
        self, now: datetime | None = None, *, actor: str = "sweeper", limit: int = 500
    ) -> list[str]:
        """Rescue expired leases (:meth:`Leases.rescue_expired
        <capataz.store._leases.Leases.rescue_expired>`) and, at most every
        ``TIDY_SECONDS`` per process, :meth:`tidy` up. Every runner sweeps (and the
        API's ``/runner/sweep`` for remote ones), so this needs no service of its own.
        Each round also seals pending audit entries into the chain (one sealer at a
        time; the others skip), after the rescue so its entries are sealed too."""
        rescued = self.leases.rescue_expired(now, actor=actor, limit=limit)
        self.audit.seal()
        if time.monotonic() - self._tidied_at > TIDY_SECONDS:
            self._tidied_at = time.monotonic()
            self.tidy()
        return rescued

    def tidy(self, keep_events_days: float = 7.0) -> list[str]:
        """Sweeper housekeeping beside :meth:`sweep`: report silent runners offline
        and drop events older than ``keep_events_days``; returns the silent runners."""
        silent = self.runners.mark_silent()
        self.events.prune(self._now() - timedelta(days=keep_events_days))
        return silent

    # -- operations ------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The runbook's figures (``GET /ops/metrics``, ``capataz metrics``): tasks per
        state (every state, zeros included), runners online and offline, the share of
        the last 20 finished runs that ended failed or blocked, and how long the oldest
        due ready task has waited (None when none is), and what the agents reported
        they used, by agent (``store.runs.usage_by_agent``), and what the planner's calls
        used (``store.directives.usage``). It reads across tasks,
        runners and runs, so it belongs to no one facade."""
        now = self._now()
        online = online_clause(now)
        # When a ready task became claimable: its run_after, or when it last changed
        # (released by its dependencies, given back), whichever is later.
        due_since = sa.type_coerce(
            sa.case(
                (tasks.c.run_after > tasks.c.updated_at, tasks.c.run_after),
                else_=tasks.c.updated_at,
            ),
            UTCDateTime(),
        )
        # Newest first by start (the index runs already have); claims stay cheap.
        last_20 = (
            sa.select(runs.c.outcome)
            .where(runs.c.status == RunStatus.FINISHED.value)
            .order_by(runs.c.started_at.desc())
            .limit(20)
            .subquery()
        )
        with self._read() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
                ).all()
            )
            runner_counts = conn.execute(
                sa.select(
                    sa.func.count().filter(online),
                    sa.func.count(),
                ).select_from(runners)
            ).one()
            finished = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count().filter(
                        last_20.c.outcome.in_((TaskState.FAILED.value, TaskState.BLOCKED.value))
                    ),
                ).select_from(last_20)
            ).one()
            total_runs = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
            oldest = conn.execute(
                sa.select(sa.func.min(due_since)).where(
                    tasks.c.status == TaskState.READY.value, tasks.c.run_after <= now
                )
            ).scalar()
        return {
            "tasks": {state.value: int(counts.get(state.value, 0)) for state in TaskState},
            "runners": {
                "online": int(runner_counts[0]),
                "offline": int(runner_counts[1] - runner_counts[0]),
            },
            "runs": {
                "fail_rate_last_20": finished[1] / finished[0] if finished[0] else 0.0,
                "total": int(total_runs),
            },
            "backlog": {
                "oldest_ready_age_seconds": (
                    max((now - oldest).total_seconds(), 0.0) if oldest is not None else None
                )
            },
            "usage": self.runs.usage_by_agent(),
            "planner": self.directives.usage(),
        }
