"""State names of the durable queue. The values are what the database stores and what
the API and CLI print (docs/queue-states.md, a contract), so they never change
casually."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "RUN_FILTERS",
    "TERMINAL_STATES",
    "DirectiveStatus",
    "RunState",
    "RunStatus",
    "TaskState",
]


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for its dependencies
    READY = "ready"  # may be claimed once run_after has passed
    RUNNING = "running"  # leased by a runner
    DONE = "done"  # landed
    FAILED = "failed"  # attempts exhausted
    BLOCKED = "blocked"  # a gate blocked it (or a dependency ended badly)
    ESCALATED = "escalated"  # waiting for a human
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """A terminal task never runs again unless an operator requeues it."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED}
)


class RunStatus(StrEnum):
    """One attempt of a task: ``running`` until its runner reports, the sweeper finds its
    lease expired (``lost``), an operator cancels the task under it, or its runner gives
    the task back unfinished while shutting down (``released``)."""

    RUNNING = "running"
    FINISHED = "finished"
    LOST = "lost"
    CANCELLED = "cancelled"
    RELEASED = "released"


class RunState(StrEnum):
    """A run's ``status`` as the API and CLI show it: the runbook's vocabulary, so
    ``jq '.data[] | select(.status=="failed")'`` finds the runs that went wrong. Derived
    in SQL from the stored :class:`RunStatus` (shown as ``lifecycle``) and the reported
    ``outcome``; docs/queue-states.md has the table."""

    RUNNING = "running"  # lifecycle running
    SUCCEEDED = "succeeded"  # finished, outcome done
    FAILED = "failed"  # finished, outcome failed or blocked
    ESCALATED = "escalated"  # finished, outcome escalated (a human's edits awaited)
    CANCELLED = "cancelled"  # cancelled under its runner, or finished cancelled
    LOST = "lost"  # its runner went silent; the sweeper took the task back
    RELEASED = "released"  # given back unfinished (shutdown, credential not yet there)


# What ``GET /runs?status=`` and ``store.runs.list(status=)`` accept: a RunState, or
# ``finished`` (every run that reported an ending, the filter of before RunState).
RUN_FILTERS = (*(state.value for state in RunState), RunStatus.FINISHED.value)


class DirectiveStatus(StrEnum):
    """A planner directive (docs/planner.md): ``PENDING`` until an operator applies it
    (its tasks are queued, ``APPLIED``) or rejects it (``REJECTED``); a directive whose
    tasks did not validate is stored ``REJECTED`` at once, with the reason. Upper-case,
    like credential requests' ``WAITING``/``PROVIDED``: the runbook's vocabulary."""

    PENDING = "PENDING"
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"
