"""``store.audit``: checking and exporting the audit chain. Entries are appended by
every other facade, in the transaction of the change they record
(``StoreBase._audit``); the chain itself is defined in ``_audit_sql``."""

from __future__ import annotations

from typing import TextIO

from capataz.store import _audit_sql
from capataz.store._audit_sql import AuditFault
from capataz.store._base import StoreBase

__all__ = ["AuditTrail"]


class AuditTrail(StoreBase):
    """The append-only hash chain of every state change, as operators check it."""

    def verify(self) -> AuditFault | None:
        """The first entry where the chain breaks, or None when it is whole."""
        with self._long_read() as conn:  # streams the whole chain
            return _audit_sql.verify_detail(conn)

    def export(self, file: TextIO) -> int:
        """Write the chain to ``file`` as JSON lines (to anchor it elsewhere); how many
        entries."""
        with self._long_read() as conn:  # as slowly as ``file`` takes it
            return _audit_sql.export_jsonl(conn, file)
