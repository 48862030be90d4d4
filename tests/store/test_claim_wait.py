"""``leases.claim(wait=...)``: a claim that waits for work inside the store, on both
databases (woken by LISTEN on PostgreSQL, polling on SQLite)."""

from __future__ import annotations

import threading

from capataz.store import ClaimedTask, Store


def test_a_waiting_claim_gets_a_task_added_meanwhile_and_none_at_its_deadline(
    store: Store,
) -> None:
    assert store.leases.claim("r", wait=0.2) is None
    assert store.leases.claim_wait == 0.0  # the store never asks a runner to wait in it
    got: list[ClaimedTask | None] = []
    waiting = threading.Thread(target=lambda: got.append(store.leases.claim("r", wait=60)))
    waiting.start()
    store.tasks.add("late", "x", id="late")
    waiting.join(timeout=90)
    (claimed,) = got
    assert claimed is not None and claimed.id == "late"
