"""``store.runners``: runner registrations: who is working, where, on what, and whether
it is alive."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from capataz.errors import TaskError
from capataz.events import EventType
from capataz.store import _lease_sql
from capataz.store._base import StoreBase
from capataz.store.errors import ArgumentRefusedError, NoSuchRunnerError
from capataz.store.records import RunnerInfo
from capataz.store.schema import runners, runs, tasks

__all__ = ["ONLINE_SECONDS", "Runners", "online_clause"]

# A runner is online while its last heartbeat is younger than this.
ONLINE_SECONDS = 60.0


def online_clause(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        runners.c.stopped_at.is_(None),
        runners.c.last_seen_at > now - timedelta(seconds=ONLINE_SECONDS),
    )


def _no_runner(runner_id: str) -> NoSuchRunnerError:
    return NoSuchRunnerError(
        f"no runner {runner_id}", fix="`capataz runner status` lists the runners"
    )


class Runners(StoreBase):
    """The runners that registered, and what the sweepers learn about them."""

    def register(
        self,
        name: str,
        *,
        labels: Sequence[str] = (),
        hostname: str,
        pid: int,
        concurrency: int,
    ) -> str:
        """Record a runner that just started; returns its id (claim tasks with it)."""
        if concurrency < 1:
            raise ArgumentRefusedError(
                f"a runner needs a concurrency of at least 1, not {concurrency}",
                fix="pass --concurrency 1 or more",
            )
        now = self._now()
        runner_id = f"r-{secrets.token_hex(6)}"
        values = {
            "id": runner_id,
            "name": name,
            "labels": sorted(set(labels)),
            "hostname": hostname,
            "pid": pid,
            "concurrency": concurrency,
            "started_at": now,
            "last_seen_at": now,
        }
        with self._write() as conn:
            conn.execute(sa.insert(runners), values)
            payload = {k: values[k] for k in ("name", "labels", "hostname", "pid", "concurrency")}
            self._audit(conn, runner_id, "runner.registered", runner_id, **payload)
            self._event(
                conn, EventType.RUNNER_ONLINE, runner_id=runner_id, name=name, hostname=hostname
            )
        return runner_id

    def heartbeat(self, runner_id: str) -> None:
        """The runner is alive (it stays online for 60 s after this). A runner the
        sweeper had marked silent is back online."""
        now = self._now()
        with self._write() as conn:
            updated = conn.execute(
                sa.update(runners)
                .where(runners.c.id == runner_id, runners.c.silent_since.is_(None))
                .values(last_seen_at=now)
            )
            if updated.rowcount == 1:
                return
            back = conn.execute(
                sa.update(runners)
                .where(runners.c.id == runner_id)
                .values(last_seen_at=now, silent_since=None)
            )
            if back.rowcount == 0:
                raise _no_runner(runner_id)
            self._event(
                conn, EventType.RUNNER_ONLINE, runner_id=runner_id, reason="heard from again"
            )

    def mark_stopped(self, runner_id: str) -> None:
        """The runner shut down (it shows offline at once). Stopping twice is harmless."""
        now = self._now()
        with self._write() as conn:
            updated = conn.execute(
                sa.update(runners)
                .where(runners.c.id == runner_id, runners.c.stopped_at.is_(None))
                .values(stopped_at=now, last_seen_at=now)
            )
            if updated.rowcount == 1:
                self._audit(conn, runner_id, "runner.stopped", runner_id)
                self._event(conn, EventType.RUNNER_OFFLINE, runner_id=runner_id, reason="stopped")
                return
            known = conn.execute(sa.select(runners.c.id).where(runners.c.id == runner_id))
            if known.first() is None:
                raise _no_runner(runner_id)

    def forget(self, runner_id: str, *, actor: str = "capataz") -> None:
        """Delete an offline runner's registration (its runs keep its id). An online
        runner is refused: it would only register again, and forgetting it would hide
        the tasks it holds."""
        now = self._now()
        with self._write() as conn:
            row = conn.execute(
                sa.select(runners.c.id, online_clause(now).label("online")).where(
                    runners.c.id == runner_id
                )
            ).first()
            if row is None:
                raise _no_runner(runner_id)
            if row.online:
                raise TaskError(
                    f"runner {runner_id} is online",
                    fix="stop it first, or wait until it is offline",
                )
            conn.execute(sa.delete(runners).where(runners.c.id == runner_id))
            self._audit(conn, actor, "runner.forgotten", runner_id)

    def mark_silent(self) -> list[str]:
        """Runners that stopped heartbeating without saying goodbye (killed, frozen,
        cut off) are offline: say so once on the event stream. Called by sweepers."""
        now = self._now()
        cutoff = now - timedelta(seconds=ONLINE_SECONDS)
        with self._write() as conn:
            silent = (
                conn.execute(
                    sa.update(runners)
                    .where(
                        runners.c.stopped_at.is_(None),
                        runners.c.silent_since.is_(None),
                        runners.c.last_seen_at <= cutoff,
                    )
                    .values(silent_since=now)
                    .returning(runners.c.id)
                )
                .scalars()
                .all()
            )
            for runner_id in sorted(silent):
                self._event(
                    conn,
                    EventType.RUNNER_OFFLINE,
                    runner_id=runner_id,
                    reason=f"no heartbeat for {ONLINE_SECONDS:.0f} s",
                )
        return sorted(silent)

    def current_runs(self) -> dict[str, list[dict[str, Any]]]:
        """What each runner is working on now, by runner id: the run (attempt) of every
        task it leases, so the panel can link a busy runner to its live log."""
        held = (
            sa.select(
                tasks.c.lease_owner,
                tasks.c.id.label("task_id"),
                tasks.c.title.label("task_title"),
                tasks.c.status.label("task_status"),
                runs.c.id.label("run_id"),
                runs.c.started_at,
            )
            .select_from(
                tasks.outerjoin(
                    runs,
                    sa.and_(
                        runs.c.task_id == tasks.c.id,
                        runs.c.fencing_token == tasks.c.fencing_token,
                    ),
                )
            )
            .where(tasks.c.status.in_(_lease_sql.LEASED), tasks.c.lease_owner.is_not(None))
            .order_by(tasks.c.id)
        )
        found: dict[str, list[dict[str, Any]]] = {}
        with self._read() as conn:
            for row in conn.execute(held):
                entry = dict(row._mapping)
                found.setdefault(entry.pop("lease_owner"), []).append(entry)
        return found

    # Last: a method named ``list`` would shadow the builtin in annotations below it.
    def list(self) -> list[RunnerInfo]:
        """Every registered runner, oldest first, with the tasks it holds now."""
        now = self._now()
        with self._read() as conn:
            rows = conn.execute(
                sa.select(runners, online_clause(now).label("online")).order_by(
                    runners.c.started_at, runners.c.id
                )
            ).all()
            held: dict[str, list[str]] = {}
            leases = sa.select(tasks.c.lease_owner, tasks.c.id).where(
                tasks.c.status.in_(_lease_sql.LEASED), tasks.c.lease_owner.is_not(None)
            )
            for owner, task_id in conn.execute(leases.order_by(tasks.c.id)):
                held.setdefault(owner, []).append(task_id)
        return [
            RunnerInfo(
                id=row.id,
                name=row.name,
                labels=tuple(row.labels),
                hostname=row.hostname,
                pid=row.pid,
                concurrency=row.concurrency,
                started_at=row.started_at,
                last_seen_at=row.last_seen_at,
                stopped_at=row.stopped_at,
                online=bool(row.online),
                current_tasks=tuple(held.get(row.id, ())),
            )
            for row in rows
        ]
