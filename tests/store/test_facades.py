"""The Store stays a handful of facades (docs/architecture.md, "The store"): its own
surface is small, each area's is too, and all of them share one engine and one clock,
so a test's clock (or a second Store's engine) can never reach only some of them."""

from __future__ import annotations

from datetime import timedelta

from capataz.store import Store

from .conftest import Clock

FACADES = (
    "tasks",
    "leases",
    "runners",
    "runs",
    "escalations",
    "tokens",
    "secrets",
    "context",
    "events",
    "audit",
    "directives",
)
# Beyond this an area has become two; split it rather than raise the number.
MAX_PUBLIC = 12


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_the_store_keeps_only_what_spans_areas(store: Store) -> None:
    assert _public(type(store)) == {"open", "close", "sweep", "tidy", "metrics", "engine", "clock"}
    for name in FACADES:
        assert len(_public(type(getattr(store, name)))) <= MAX_PUBLIC, name


def test_every_facade_shares_the_engine_and_the_clock(store: Store, clock: Clock) -> None:
    shared = {id(getattr(store, name)._shared) for name in FACADES}
    assert shared == {id(store._shared)}
    task = store.tasks.add("a", "x", id="a")
    clock.advance(5)
    claimed = store.leases.claim("r1", lease_seconds=30)
    assert claimed is not None
    # The fake clock ticks a microsecond per reading: both facades read the same clock.
    waited = claimed.lease_expires_at - task.created_at
    assert timedelta(seconds=35) < waited < timedelta(seconds=35.001)
