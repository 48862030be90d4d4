"""Sealing: entries written without a shared lock reach the hash chain later, in one
order, exactly once, whatever the writers' commit order and however a sealer dies."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from capataz.store import Store
from capataz.store import _audit_sql as audit_log
from capataz.store.schema import audit, audit_pending

from .conftest import Clock

SEAL_KEY = 0x0CA9A7A3  # _audit_sql's sealer lock


def _pending(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit_pending)).scalar_one())


def _sealed(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(audit.c.seq).order_by(audit.c.seq)).scalars())


def _write_unsealed(store: Store, count: int, *, subject: str = "t") -> None:
    """Pending entries as PostgreSQL's writers leave them (on SQLite writers chain at
    once, so the sealer's tests write these directly)."""
    with store.engine.begin() as conn:
        for n in range(count):
            audit_log.append_unsealed(
                conn, at=store.clock(), actor="tester", action="test", subject=f"{subject}{n}"
            )


def test_concurrent_writers_and_sealers_make_one_chain(db_url: str, clock: Clock) -> None:
    stores = [Store.open(db_url, clock=clock) for _ in range(2)]
    writers, per_writer = 4, 15
    writing = threading.Event()
    writing.set()

    def write(index: int) -> None:
        store = stores[index % 2]
        for n in range(per_writer):
            store.tasks.add(f"task {index}-{n}", "do it")
        while (claimed := store.leases.claim(f"runner-{index}")) is not None:
            store.leases.complete(claimed.id, claimed.fencing_token, "done", "landed")

    def seal(store: Store) -> None:
        while writing.is_set():
            store.audit.seal(batch=7)

    try:
        with ThreadPoolExecutor(writers + len(stores)) as pool:
            sealers = [pool.submit(seal, s) for s in stores]
            for done in [pool.submit(write, i) for i in range(writers)]:
                done.result()  # a writer's error fails the test here
            writing.clear()
            for sealer in sealers:
                sealer.result()
        store = stores[0]
        assert store.audit.verify() is None
        expected = 3 * writers * per_writer  # created, claimed, done: each task once
        assert _sealed(store) == list(range(1, expected + 1))
        assert _pending(store) == 0
        assert store.audit.export(io.StringIO()) == expected
        # And the sealed chain still names an edited entry.
        with store.engine.begin() as conn:
            conn.execute(audit.update().where(audit.c.seq == 40).values(subject="t-other"))
        fault = store.audit.verify()
        assert fault is not None
        assert fault.seq == 40
    finally:
        for opened in stores:
            opened.close()


def test_an_entry_committed_late_is_sealed_after_those_sealed_before(
    migrated_pg_url: str, clock: Clock
) -> None:
    """The case a seal-by-id scheme gets wrong: a writer takes a lower id but commits
    after a higher one was sealed. Here it is simply chained next."""
    store = Store.open(migrated_pg_url, clock=clock)
    try:
        with store.engine.connect() as slow:
            slow.begin()
            audit_log.append(slow, at=clock(), actor="slow", action="test", subject="first-id")
            store.tasks.add("fast", "commits first")  # a higher pending id, committed
            assert store.audit.seal() == 1
            slow.commit()
        assert store.audit.seal() == 1
        assert store.audit.verify() is None
        with store.engine.connect() as conn:
            actors = conn.execute(sa.select(audit.c.actor).order_by(audit.c.seq)).scalars()
            assert list(actors) == ["capataz", "slow"]
    finally:
        store.close()


def test_a_second_sealer_skips_while_one_seals(migrated_pg_url: str, clock: Clock) -> None:
    store = Store.open(migrated_pg_url, clock=clock)
    try:
        store.tasks.add("a", "a")
        with store.engine.connect() as other:
            other.begin()
            assert other.execute(sa.select(sa.func.pg_try_advisory_xact_lock(SEAL_KEY))).scalar()
            assert store.audit.seal() is None  # no waiting on the other sealer
            assert _pending(store) == 1
            other.rollback()
        assert store.audit.seal() == 1
    finally:
        store.close()


def test_an_entry_left_unsealed_past_the_bound_is_reported(store: Store, clock: Clock) -> None:
    store.tasks.add("a", "a")
    _write_unsealed(store, 1)
    assert store.audit.verify(seal=False) is None  # young: the sealer's next round
    clock.advance(audit_log.UNSEALED_BOUND.total_seconds() + 1)
    fault = store.audit.verify(seal=False)
    assert fault is not None
    assert "unsealed for 61 s" in fault.reason
    assert fault.seq == len(_sealed(store)) + 1
    assert store.audit.verify() is None  # sealing it is the cure
    assert _pending(store) == 0


def test_a_sealer_dying_between_batches_leaves_a_chain_the_next_continues(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.tasks.add("a", "a")
    store.audit.seal()
    _write_unsealed(store, 10)
    real = audit_log.seal_batch
    calls = 0

    def dies_in_the_second_batch(conn: sa.Connection, limit: int = 1000) -> Any:
        nonlocal calls
        calls += 1
        sealed = real(conn, limit)
        if calls == 2:  # after its rows were chained, before the commit
            raise RuntimeError("killed mid-seal")
        return sealed

    monkeypatch.setattr(audit_log, "seal_batch", dies_in_the_second_batch)
    with pytest.raises(RuntimeError, match="killed mid-seal"):
        store.audit.seal(batch=4)
    monkeypatch.undo()
    assert store.audit.verify(seal=False) is None  # the first batch, whole
    assert _sealed(store) == [1, 2, 3, 4, 5]
    assert _pending(store) == 6  # the second batch rolled back with its transaction
    assert store.audit.seal(batch=4) == 6
    assert store.audit.verify() is None
    assert _sealed(store) == list(range(1, 12))
    assert _pending(store) == 0


_KILLED_MID_SEAL = """
import os, signal, sys
from capataz.store import Store, _audit_sql

real, calls = _audit_sql.seal_batch, []

def dies_in_the_third_batch(conn, limit=1000):
    calls.append(1)
    sealed = real(conn, limit)
    if len(calls) == 3:  # chained, not committed: the process dies here
        os.kill(os.getpid(), signal.SIGKILL)
    return sealed

_audit_sql.seal_batch = dies_in_the_third_batch
Store.open(sys.argv[1]).audit.seal(batch=2)
"""


def test_a_sealer_process_killed_mid_seal_leaves_a_chain_the_next_continues(
    store: Store, db_url: str
) -> None:
    _write_unsealed(store, 7)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_SEAL, db_url], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert store.audit.verify(seal=False) is None
    assert _sealed(store) == [1, 2, 3, 4]  # two batches committed, the third lost
    assert _pending(store) == 3
    assert store.audit.seal() == 3  # the killed one's lock went with its connection
    assert store.audit.verify() is None
    assert _sealed(store) == list(range(1, 8))
