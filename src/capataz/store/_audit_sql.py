"""The audit trail: an append-only hash chain over canonical JSON.

Each entry's hash covers its own fields and the previous entry's hash, so editing,
deleting, inserting or reordering any entry breaks the chain at that point and
:func:`verify` names it. (A chain cannot show that its newest entries were cut off, nor
a wholesale rewrite of every hash after an edit; exporting it elsewhere — see
:func:`export_jsonl` — is what anchors it against those.)

Appends must be serial for the chain to stay linear. On SQLite every write transaction
already holds the database lock (BEGIN IMMEDIATE); on PostgreSQL :func:`append` takes a
transaction-scoped advisory lock, released at commit, so the append should be the last
statement of its transaction to hold that lock briefly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import sqlalchemy as sa

from capataz.redaction import redact_data
from capataz.store.schema import audit

__all__ = [
    "GENESIS",
    "PG_LOCK",
    "AuditFault",
    "append",
    "entry_hash",
    "export_jsonl",
    "verify",
    "verify_detail",
]

GENESIS = "0" * 64
# Any fixed number works; it only has to be the same for every capataz process.
PG_LOCK = sa.select(sa.func.pg_advisory_xact_lock(0x0CA9A7A2))


def canonical(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the one serialisation that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    payload: Any,
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "at": _timestamp(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def append(
    conn: sa.Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's transaction; returns its seq."""
    if conn.dialect.name == "postgresql":
        conn.execute(PG_LOCK)
    tail = conn.execute(_TAIL).first()
    seq, prev_hash = (tail.seq + 1, tail.hash) if tail else (1, GENESIS)
    # What the database will hand back on verify: JSON-normalised, microsecond UTC.
    body = json.loads(canonical(redact_data(payload or {})))
    at = at.astimezone(UTC)
    digest = entry_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        payload=body,
        prev_hash=prev_hash,
    )
    values = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": body,
        "prev_hash": prev_hash,
        "hash": digest,
    }
    conn.execute(_INSERT, values)
    return int(seq)


# Built once: constructing statements per call costs more than SQLite running them.
_TAIL = sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_INSERT = audit.insert()


@dataclass(frozen=True)
class AuditFault:
    """The first entry where the chain does not hold, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.reason}"


def verify_detail(conn: sa.Connection) -> AuditFault | None:
    """Walk the chain from the start; the first broken entry, or None when intact."""
    prev_hash, expected_seq = GENESIS, 1
    rows = conn.execution_options(yield_per=1000).execute(sa.select(audit).order_by(audit.c.seq))
    for row in rows:
        if row.seq != expected_seq:
            missing = "missing" if row.seq > expected_seq else "out of order"
            return AuditFault(row.seq, f"expected seq {expected_seq} ({missing} entries)")
        if row.prev_hash != prev_hash:
            return AuditFault(row.seq, "does not follow the previous entry (deleted or inserted)")
        recomputed = entry_hash(
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            payload=row.payload,
            prev_hash=row.prev_hash,
        )
        if recomputed != row.hash:
            return AuditFault(row.seq, "content does not match its hash (edited or moved)")
        prev_hash, expected_seq = row.hash, expected_seq + 1
    return None


def verify(conn: sa.Connection) -> int | None:
    """The seq of the first bad entry, or None when the whole chain is intact."""
    fault = verify_detail(conn)
    return fault.seq if fault else None


def export_jsonl(conn: sa.Connection, file: TextIO) -> int:
    """Write every entry, in order, as one canonical JSON object per line (the fields
    the hash covers plus the hash, so the export can be verified on its own); returns
    the number of entries written."""
    count = 0
    rows = conn.execution_options(yield_per=1000).execute(sa.select(audit).order_by(audit.c.seq))
    for row in rows:
        record = {
            "seq": row.seq,
            "at": _timestamp(row.at),
            "actor": row.actor,
            "action": row.action,
            "subject": row.subject,
            "payload": row.payload,
            "prev_hash": row.prev_hash,
            "hash": row.hash,
        }
        file.write(canonical(record) + "\n")
        count += 1
    return count
