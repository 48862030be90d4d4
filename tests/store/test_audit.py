"""The audit trail records every state change and notices tampering."""

from __future__ import annotations

import io
import itertools
import json

import sqlalchemy as sa

from capataz.store import Store
from capataz.store import _audit_sql as audit_log
from capataz.store.schema import audit


def _fill(store: Store) -> None:
    first = store.tasks.add("a", "a")
    store.tasks.add("b", "b", depends_on=[first.id])
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    store.leases.complete(claimed.id, claimed.fencing_token, "done", "landed")
    store.audit.seal()  # on PostgreSQL the entries reach the chain when sealed


def test_every_state_change_is_in_the_chain(store: Store) -> None:
    _fill(store)
    out = io.StringIO()
    assert store.audit.export(out) == 5
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["action"] for e in entries] == [
        "task.created",
        "task.created",
        "task.claimed",
        "task.done",
        "task.ready",
    ]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[2]["actor"] == "runner-1"
    assert entries[0]["prev_hash"] == audit_log.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert store.audit.verify() is None


def _tamper(store: Store, *statements: sa.Executable) -> int | None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)
    with store.engine.connect() as conn:
        return audit_log.verify(conn)


def test_edited_entry_is_named(store: Store) -> None:
    _fill(store)
    assert _tamper(store, audit.update().where(audit.c.seq == 3).values(actor="someone")) == 3


def test_deleted_entry_is_noticed_at_the_next_one(store: Store) -> None:
    _fill(store)
    assert _tamper(store, audit.delete().where(audit.c.seq == 2)) == 3
    fault = store.audit.verify()
    assert fault is not None
    assert "missing" in fault.reason


def test_reordered_entries_are_named(store: Store) -> None:
    _fill(store)
    swap = [
        audit.update().where(audit.c.seq == 2).values(seq=-2),
        audit.update().where(audit.c.seq == 3).values(seq=2),
        audit.update().where(audit.c.seq == -2).values(seq=3),
    ]
    assert _tamper(store, *swap) == 2


def test_inserted_entry_is_named(store: Store) -> None:
    _fill(store)
    shift = [audit.update().where(audit.c.seq == seq).values(seq=seq + 1) for seq in (5, 4)]
    with store.engine.connect() as conn:
        copy = dict(conn.execute(sa.select(audit).where(audit.c.seq == 3)).mappings().one())
    forged = audit.insert().values({**copy, "seq": 4, "action": "task.done"})
    assert _tamper(store, *shift, forged) == 4
