"""Plain values the store hands out and takes in. Frozen dataclasses rather than
pydantic models: a claim is on the hot path and its fields come from our own schema,
so there is nothing to validate twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capataz.store.statuses import TaskState

__all__ = ["ClaimedTask", "Task", "TaskSpec"]


@dataclass(frozen=True)
class TaskSpec:
    """A task to add. ``depends_on`` names ids already in the store or ids of other
    specs added in the same call; ``id`` is generated when not given."""

    title: str
    instruction: str
    agent: str = "shell"
    id: str | None = None
    depends_on: Sequence[str] = ()
    priority: int = 0
    max_attempts: int = 3
    labels: Sequence[str] = ()
    run_after: datetime | None = None
    idempotency_key: str | None = None
    allow_high: bool = False
    base_commit: str | None = None


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    instruction: str
    agent: str
    status: TaskState
    priority: int
    attempts: int
    max_attempts: int
    labels: tuple[str, ...]
    run_after: datetime
    idempotency_key: str | None
    allow_high: bool
    base_commit: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    fencing_token: int
    created_at: datetime
    updated_at: datetime
    reason: str | None
    depends_on: tuple[str, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Any, depends_on: Sequence[str] = ()) -> Task:
        return cls(
            id=row.id,
            title=row.title,
            instruction=row.instruction,
            agent=row.agent,
            status=TaskState(row.status),
            priority=row.priority,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            labels=tuple(row.labels),
            run_after=row.run_after,
            idempotency_key=row.idempotency_key,
            allow_high=row.allow_high,
            base_commit=row.base_commit,
            lease_owner=row.lease_owner,
            lease_expires_at=row.lease_expires_at,
            fencing_token=row.fencing_token,
            created_at=row.created_at,
            updated_at=row.updated_at,
            reason=row.reason,
            depends_on=tuple(sorted(depends_on)),
        )


@dataclass(frozen=True)
class ClaimedTask:
    """What a runner needs to run one attempt, and the token that proves, when it
    reports back, that the task is still its own."""

    id: str
    run_id: str
    title: str
    instruction: str
    agent: str
    labels: tuple[str, ...]
    allow_high: bool
    base_commit: str | None
    attempt: int
    max_attempts: int
    fencing_token: int
    lease_expires_at: datetime
