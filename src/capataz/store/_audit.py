"""``store.audit``: sealing, checking and exporting the audit chain. Entries are
appended by every other facade, in the transaction of the change they record
(``StoreBase._audit``); the chain itself is defined in ``_audit_sql``, and what it
guarantees when in docs/audit.md."""

from __future__ import annotations

from typing import TextIO

from capataz.store import _audit_sql
from capataz.store._audit_sql import AuditFault
from capataz.store._base import StoreBase

__all__ = ["AuditTrail"]


class AuditTrail(StoreBase):
    """The append-only hash chain of every state change, as operators check it."""

    def seal(self, batch: int = 1000) -> int | None:
        """Chain every committed pending entry, ``batch`` per transaction; how many, or
        None when another sealer was already at it (it will seal them; nobody waits).

        Called by every sweeper round and before verify and export read the chain. Each
        batch commits on its own, so a sealer killed between batches leaves a whole
        chain that the next call continues."""
        with self._read() as conn:
            if not _audit_sql.any_pending(conn):
                return 0  # the usual case on SQLite: no write lock taken for nothing
        total = 0
        while True:
            with self._write() as conn:
                count = _audit_sql.seal_batch(conn, batch)
            if count is None:
                return None if total == 0 else total
            total += count
            if count < batch:
                return total

    def verify(self, *, seal: bool = True) -> AuditFault | None:
        """The first entry where the chain breaks, or an entry left unsealed for longer
        than ``_audit_sql.UNSEALED_BOUND``; None when the chain is whole. Seals first
        (unless ``seal`` is False), so that what was written is checked."""
        if seal:
            self.seal()
        with self._long_read() as conn:  # streams the whole chain
            return _audit_sql.verify_detail(conn, now=self._now())

    def export(self, file: TextIO, *, seal: bool = True) -> int:
        """Write the sealed chain to ``file`` as JSON lines (to anchor it elsewhere);
        how many entries. Seals first (unless ``seal`` is False)."""
        if seal:
            self.seal()
        with self._long_read() as conn:  # as slowly as ``file`` takes it
            return _audit_sql.export_jsonl(conn, file)
