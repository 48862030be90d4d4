"""State names of the durable queue. The values are what the database stores and what
the API and CLI print (ARCHITECTURE.md, "Task states", a contract), so they never
change casually."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL_STATES", "RunStatus", "TaskState"]


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
