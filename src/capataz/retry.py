"""Retrying what may come back by itself: one schedule and one loop for all of capataz.

Every place that waits out an outage (a runner's store calls, a runner starting before
its database, a remote runner's outbox) uses :class:`Backoff`, so they all back off the
same way: exponential growth up to a cap, with *full jitter* — each wait is drawn
uniformly between zero and that ceiling. Without jitter, runners that lost the same
database at the same instant would all come back in lock-step and hit it together at
every step; with full jitter their retries spread over the whole window, which is the
variant that keeps the load on a recovering server lowest.

Only :class:`capataz.errors.Unavailable` is retried by default: an error that is not
transient (a constraint violation, a bug in a query) surfaces at the first attempt.
The clock, the sleep and the random source are parameters so the schedule can be
tested without waiting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from capataz.errors import Unavailable

__all__ = ["OUTAGE", "Backoff", "retry"]

T = TypeVar("T")

# Beyond this many doublings the ceiling is the cap anyway; bounding the exponent keeps
# ``2.0 ** n`` from overflowing after days of failures.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    """Waits after consecutive failures: the n-th (1, 2, …) is uniform in
    ``[0, min(cap, base * 2 ** (n - 1))]``."""

    base: float = 0.2
    cap: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, not {self.base}, {self.cap}")

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures."""
        doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        return min(self.cap, self.base * 2.0**doublings)

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """One wait after ``failures`` consecutive failures (``rng`` gives [0, 1))."""
        return self.ceiling(failures) * rng()


# How capataz waits for its database or control plane: 0.2 s doubling to 5 s.
OUTAGE = Backoff()


def retry(
    call: Callable[[], T],
    *,
    transient: tuple[type[BaseException], ...] = (Unavailable,),
    backoff: Backoff = OUTAGE,
    give_up: float | None = 300.0,
    on_retry: Callable[[BaseException, float], None] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """``call()``, called again after each ``transient`` error with a :class:`Backoff`
    wait in between; any other error is raised at once. After ``give_up`` seconds
    (None: never) the last transient error is raised; no wait runs past that deadline.
    ``on_retry(error, delay)`` runs before each wait (to log it)."""
    deadline = None if give_up is None else clock() + give_up
    failures = 0
    while True:
        try:
            return call()
        except transient as exc:
            failures += 1
            delay = backoff.delay(failures, rng)
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise
                delay = min(delay, remaining)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
