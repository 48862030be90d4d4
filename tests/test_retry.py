"""capataz's one backoff: its schedule, read from the helper, never from a clock.

The sleeps, the clock and the random source are handed in, so these tests see every
wait the helper would take and none of them take time."""

from __future__ import annotations

import random

import pytest

from capataz.errors import QueueUnavailable, TaskError, Unavailable
from capataz.retry import OUTAGE, Backoff, retry


class FakeTime:
    """A clock that moves only when the helper sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, error: BaseException, result: str = "ok") -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return calls, call


def test_ceilings_double_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base=0.2, cap=5.0)
    assert [backoff.ceiling(n) for n in range(1, 9)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    )
    assert backoff.ceiling(10_000) == 5.0  # days of failures: still the cap, no overflow


def test_delays_are_full_jitter_within_the_ceiling() -> None:
    rng = random.Random(7)
    for failures in (1, 3, 6, 50):
        ceiling = OUTAGE.ceiling(failures)
        delays = [OUTAGE.delay(failures, rng.random) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Spread over the whole window, not bunched at the ceiling (jittered).
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
        assert len(set(delays)) == len(delays)
    assert OUTAGE.delay(4, lambda: 0.0) == 0.0
    assert OUTAGE.delay(4, lambda: 0.5) == pytest.approx(0.8)


def test_a_backoff_needs_a_positive_base_below_its_cap() -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=0.0)
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=10.0, cap=1.0)


def test_retry_waits_out_transient_errors_with_the_schedule() -> None:
    time = FakeTime()
    calls, call = failing(5, QueueUnavailable("away"))
    seen: list[tuple[str, float]] = []
    result = retry(
        call,
        sleep=time.sleep,
        clock=time.clock,
        rng=lambda: 1.0,  # the ceiling itself: the schedule's upper bound
        on_retry=lambda exc, delay: seen.append((type(exc).__name__, delay)),
    )
    assert result == "ok"
    assert len(calls) == 6
    assert time.sleeps == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert seen == [("QueueUnavailable", d) for d in time.sleeps]


def test_other_errors_surface_at_once() -> None:
    time = FakeTime()
    calls, call = failing(1, TaskError("a bug, not an outage"))
    with pytest.raises(TaskError):
        retry(call, sleep=time.sleep, clock=time.clock)
    assert len(calls) == 1
    assert time.sleeps == []


def test_giving_up_bounds_the_total_wait() -> None:
    time = FakeTime()
    calls, call = failing(10_000, Unavailable("gone for good"))
    with pytest.raises(Unavailable, match="gone for good"):
        retry(call, give_up=30.0, sleep=time.sleep, clock=time.clock, rng=lambda: 1.0)
    assert sum(time.sleeps) == pytest.approx(30.0)  # never a wait past the deadline
    assert max(time.sleeps) <= OUTAGE.cap
    assert len(calls) == len(time.sleeps) + 1


def test_without_a_deadline_it_keeps_going() -> None:
    time = FakeTime()
    calls, call = failing(200, Unavailable("flapping"))
    assert retry(call, give_up=None, sleep=time.sleep, clock=time.clock) == "ok"
    assert len(calls) == 201
    assert all(0.0 <= s <= OUTAGE.cap for s in time.sleeps)
