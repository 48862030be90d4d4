"""The audit trail: an append-only hash chain over canonical JSON.

Each entry's hash covers its own fields and the previous entry's hash, so editing,
deleting, inserting or reordering any entry breaks the chain at that point and
:func:`verify` names it. (A chain cannot show that its newest entries were cut off, nor
a wholesale rewrite of every hash after an edit; exporting it elsewhere — see
:func:`export_jsonl` — is what anchors it against those.)

The chain must be extended by one writer at a time to stay linear. On SQLite every
write transaction already holds the database lock (BEGIN IMMEDIATE), so :func:`append`
chains the entry at once. On PostgreSQL chaining at write time would make every writer
queue on one lock held until its commit, so there :func:`append` only inserts the entry,
unchained, into ``audit_pending``; :func:`seal_batch` (one sealer at a time, by a
try-lock: the others skip) later moves committed pending entries into the chain in the
order it finds them, deleting them from ``audit_pending`` in the same transaction. A
writer that commits late is simply sealed in a later batch, so no order of commits can
leave a gap or need an entry inserted before sealed ones. The guarantees and what they
cost are in docs/audit.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import sqlalchemy as sa

from capataz.redaction import redact_data
from capataz.store._tail import tail_of
from capataz.store.schema import audit, audit_pending

__all__ = [
    "EVENT_ORDER_KEY",
    "GENESIS",
    "PG_LOCK",
    "UNSEALED_BOUND",
    "AuditFault",
    "any_pending",
    "append",
    "append_unsealed",
    "entry_hash",
    "export_jsonl",
    "seal_batch",
    "verify",
    "verify_detail",
    "write_rows",
]

GENESIS = "0" * 64
# Any fixed numbers work; they only have to be the same for every capataz process.
# PG_LOCK orders the event stream's ids (``_event_sql``); the audit chain no longer takes
# it. SEAL_LOCK elects the one sealer: a try-lock, so a second sealer skips, not waits.
EVENT_ORDER_KEY = 0x0CA9A7A2
PG_LOCK = sa.select(sa.func.pg_advisory_xact_lock(EVENT_ORDER_KEY))
_SEAL_LOCK = sa.select(sa.func.pg_try_advisory_xact_lock(0x0CA9A7A3))

# How long an entry may stay unsealed before verify calls it a problem: sweepers seal
# every round (seconds apart), so an entry this old means no sealer has run or sealing
# fails — and the entry is not yet protected by the chain.
UNSEALED_BOUND = timedelta(seconds=60)


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
) -> None:
    """Record one entry inside the caller's transaction: chained on SQLite, left for the
    sealer on PostgreSQL (see the module's docstring). In a transaction that collects its
    tail (``_tail``) the entry is written with the others just before the commit."""
    row = _entry(at=at, actor=actor, action=action, subject=subject, payload=payload)
    tail = tail_of(conn)
    if tail is not None:
        tail.audit_rows.append(row)
    else:
        write_rows(conn, [row])


def write_rows(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Write entries (``at``, ``actor``, ``action``, ``subject``, normalised ``payload``)
    in order, in one statement: PostgreSQL into ``audit_pending``, SQLite chained after
    the chain's tail (the write lock makes this transaction the only writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_INSERT_PENDING, rows)
        return
    conn.execute(_INSERT, _chained(conn, rows))


def _chained(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (entries' fields) as the chain's next entries after its committed tail:
    numbered and hashed in order. The caller must be the only writer of the chain."""
    tail = conn.execute(_TAIL).first()
    seq, prev_hash = (tail.seq, tail.hash) if tail else (0, GENESIS)
    chained = []
    for row in rows:
        seq += 1
        digest = entry_hash(seq=seq, **row, prev_hash=prev_hash)
        chained.append({"seq": seq, **row, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    return chained


def _entry(
    *, at: datetime, actor: str, action: str, subject: str, payload: dict[str, Any] | None
) -> dict[str, Any]:
    """An entry's fields as the database will hand them back on verify: JSON-normalised
    payload (secrets masked), UTC time."""
    body = json.loads(canonical(redact_data(payload or {})))
    return {
        "at": at.astimezone(UTC),
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": body,
    }


def append_unsealed(
    conn: sa.Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Insert one entry into ``audit_pending``; no lock, no read of the chain's tail."""
    entry = _entry(at=at, actor=actor, action=action, subject=subject, payload=payload)
    conn.execute(_INSERT_PENDING, entry)


def any_pending(conn: sa.Connection) -> bool:
    """Whether any committed entry awaits sealing (a read: no lock)."""
    return conn.execute(_PENDING.limit(1)).first() is not None


def seal_batch(conn: sa.Connection, limit: int = 1000) -> int | None:
    """Move up to ``limit`` committed pending entries into the chain, in ``id`` order,
    in the caller's transaction; how many, or None when another sealer holds the lock.

    Only committed rows are visible to this transaction, and each is deleted from
    ``audit_pending`` in the same transaction that chains it, so an entry is sealed
    exactly once, whenever its writer commits. A crash or error before commit seals
    nothing of the batch; the next seal starts from the chain's committed tail."""
    if conn.dialect.name == "postgresql" and not conn.execute(_SEAL_LOCK).scalar_one():
        return None
    rows = conn.execute(_PENDING.limit(limit)).all()
    if not rows:
        return 0
    fields = [
        {
            "at": row.at.astimezone(UTC),
            "actor": row.actor,
            "action": row.action,
            "subject": row.subject,
            "payload": row.payload,
        }
        for row in rows
    ]
    conn.execute(_INSERT, _chained(conn, fields))
    conn.execute(sa.delete(audit_pending).where(audit_pending.c.id.in_([r.id for r in rows])))
    return len(rows)


# Built once: constructing statements per call costs more than SQLite running them.
_TAIL = sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_INSERT = audit.insert()
_INSERT_PENDING = audit_pending.insert()
_PENDING = sa.select(audit_pending).order_by(audit_pending.c.id)
_OLDEST_PENDING = sa.select(audit_pending.c.id, audit_pending.c.at).order_by(
    audit_pending.c.at, audit_pending.c.id
)


@dataclass(frozen=True)
class AuditFault:
    """The first entry where the chain does not hold, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.reason}"


def verify_detail(
    conn: sa.Connection, *, now: datetime | None = None, bound: timedelta = UNSEALED_BOUND
) -> AuditFault | None:
    """Walk the chain from the start; the first broken entry, or None when intact.
    Given ``now``, an entry left unsealed for longer than ``bound`` is a fault too
    (named by the seq it would take): until sealed it is not protected by the chain."""
    fault, next_seq = _walk(conn)
    if fault is not None or now is None:
        return fault
    oldest = conn.execute(_OLDEST_PENDING.limit(1)).first()
    if oldest is not None and now - oldest.at > bound:
        age = (now - oldest.at).total_seconds()
        reason = (
            f"pending entry {oldest.id} unsealed for {age:.0f} s (more than "
            f"{bound.total_seconds():.0f} s): no sealer has run, or sealing fails"
        )
        return AuditFault(next_seq, reason)
    return None


def _walk(conn: sa.Connection) -> tuple[AuditFault | None, int]:
    """The first fault of the sealed chain (or None) and the seq after its end."""
    prev_hash, expected_seq = GENESIS, 1
    rows = conn.execution_options(yield_per=1000).execute(sa.select(audit).order_by(audit.c.seq))
    for row in rows:
        if row.seq != expected_seq:
            missing = "missing" if row.seq > expected_seq else "out of order"
            reason = f"expected seq {expected_seq} ({missing} entries)"
            return AuditFault(row.seq, reason), expected_seq
        if row.prev_hash != prev_hash:
            reason = "does not follow the previous entry (deleted or inserted)"
            return AuditFault(row.seq, reason), expected_seq
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
            reason = "content does not match its hash (edited or moved)"
            return AuditFault(row.seq, reason), expected_seq
        prev_hash, expected_seq = row.hash, expected_seq + 1
    return None, expected_seq


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
