"""``store.context``: the context store's encrypted entries (what tasks publish for
their dependents).

As for secrets (``_secrets``), the store never sees a plaintext:
:mod:`capataz.context.store` encrypts before it calls here and decrypts what it reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from capataz.store import _outage, _sqlite_claims
from capataz.store._secrets import Ciphertexts
from capataz.store.schema import context_entries

__all__ = ["ContextEntries", "ContextRow"]


@dataclass(frozen=True)
class ContextRow:
    key: str
    ciphertext: str
    task_id: str | None
    updated_at: datetime
    expires_at: datetime | None


# One unexpired context entry by key: the context store's hot path (see ContextEntries.entry).
_UNEXPIRED = sa.or_(
    context_entries.c.expires_at.is_(None), context_entries.c.expires_at > sa.bindparam("now_")
)
_CONTEXT_ONE = sa.select(context_entries).where(
    context_entries.c.key == sa.bindparam("key_"), _UNEXPIRED
)
_SQLITE_CONTEXT_ONE = (
    "SELECT key, ciphertext, task_id, updated_at, expires_at FROM context_entries"
    " WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
)


def _sqlite_datetime(value: str | None) -> datetime | None:
    """Read back what SQLAlchemy stored (UTC digits, see ``sqlite_time``)."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class ContextEntries(Ciphertexts):
    """Context entries by key: the task that published each, and when it expires."""

    def put(
        self,
        entries: Mapping[str, str],
        *,
        task_id: str | None,
        expires_at: datetime | None,
    ) -> None:
        """Store (or replace) context entries (key -> ciphertext) in one transaction."""
        now = self._now()
        with self._write() as conn:
            conn.execute(
                sa.delete(context_entries).where(context_entries.c.key.in_(sorted(entries)))
            )
            if entries:
                conn.execute(
                    sa.insert(context_entries),
                    [
                        {
                            "key": key,
                            "ciphertext": value,
                            "task_id": task_id,
                            "updated_at": now,
                            "expires_at": expires_at,
                        }
                        for key, value in entries.items()
                    ],
                )
            self._audit(
                conn, task_id or "capataz", "context.set", task_id or "-", keys=sorted(entries)
            )

    def rows(
        self,
        *,
        keys: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None,
        prefix: str | None = None,
    ) -> list[ContextRow]:
        """Unexpired entries, by key, by the tasks that published them, or by prefix."""
        now = self._now()
        query = (
            sa.select(context_entries)
            .where(
                sa.or_(context_entries.c.expires_at.is_(None), context_entries.c.expires_at > now)
            )
            .order_by(context_entries.c.key)
        )
        if keys is not None:
            query = query.where(context_entries.c.key.in_(sorted(set(keys))))
        if task_ids is not None:
            query = query.where(context_entries.c.task_id.in_(sorted(set(task_ids))))
        if prefix:
            query = query.where(context_entries.c.key.startswith(prefix, autoescape=True))
        with self._read() as conn:
            return [ContextRow(**row._asdict()) for row in conn.execute(query)]

    def entry(self, key: str) -> ContextRow | None:
        """One unexpired entry by key, or None: what every context read does, so it
        skips everything a general query needs. On SQLite it runs one fixed statement
        on the thread's own sqlite3 connection (the one claims use, see
        ``_sqlite_claims``; a pool checkout through SQLAlchemy costs more than the
        query); on PostgreSQL one prebuilt statement through the read connection."""
        now = self._now()
        connections = self._shared.claim_connections
        if connections is None:
            with self._read() as conn:
                found = conn.execute(_CONTEXT_ONE, {"key_": key, "now_": now}).first()
            return ContextRow(**found._asdict()) if found is not None else None
        params = (key, _sqlite_claims.sqlite_time(now))
        db = connections.get()
        try:
            row = db.execute(_SQLITE_CONTEXT_ONE, params).fetchone()
        except sqlite3.Error as exc:
            connections.discard()
            raise _outage.dbapi_error(_SQLITE_CONTEXT_ONE, params, exc, connections.url) from exc
        finally:
            connections.put()
        if row is None:
            return None
        updated = _sqlite_datetime(row[3])
        assert updated is not None  # NOT NULL
        return ContextRow(row[0], row[1], row[2], updated, _sqlite_datetime(row[4]))

    def all_ciphertexts(self) -> dict[str, str]:
        """Every entry, expired ones too (for key rotation)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(context_entries.c.key, context_entries.c.ciphertext))
            return {row.key: row.ciphertext for row in rows}

    def delete(self, key: str, *, actor: str = "capataz") -> bool:
        with self._write() as conn:
            gone = conn.execute(
                sa.delete(context_entries).where(context_entries.c.key == key)
            ).rowcount
            if gone:
                self._audit(conn, actor, "context.removed", key)
        return bool(gone)

    def replace_ciphertexts(self, rewritten: Mapping[str, str], *, actor: str) -> int:
        """Key rotation of the context store: swap in every re-encrypted entry at once
        (see :meth:`Ciphertexts._replace`)."""
        return self._replace(
            context_entries,
            context_entries.c.key,
            rewritten,
            actor=actor,
            subject="context",
            stamp_rotation=False,
        )
