"""Plain values the store hands out and takes in. Frozen dataclasses rather than
pydantic models: a claim is on the hot path and its fields come from our own schema,
so there is nothing to validate twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any

from capataz.store.statuses import DirectiveStatus, TaskState
from capataz.units import Budget

__all__ = [
    "ClaimedTask",
    "Directive",
    "EscalationAnswer",
    "NewTask",
    "ProposedTask",
    "RunDetail",
    "RunDetails",
    "RunInfo",
    "RunRecord",
    "RunnerInfo",
    "StepInfo",
    "Task",
    "TokenInfo",
    "directive_json",
    "task_json",
]


@dataclass(frozen=True)
class NewTask:
    """A task to add to the queue (not what one run executes: that is
    :class:`capataz.pipeline.RunSpec`). ``depends_on`` names ids already in the store
    or ids of other specs added in the same call; ``id`` is generated when not given."""

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
    budget: Budget | None = None  # None: the agent's default ([agents.X] budget)


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
    # Why it last went wrong (the runbook's ``last_error``; docs/runbook.md): for a
    # failed or blocked task the reason it ended so; otherwise the reason of its newest
    # run that ended failed, blocked or lost (a task waiting to retry); None when none
    # did, and once the task is done.
    last_error: str | None = None
    budget: Budget | None = None  # the task's own; None: the agent's default

    @classmethod
    def from_row(cls, row: Any, depends_on: Sequence[str] = ()) -> Task:
        status = TaskState(row.status)
        if status is TaskState.DONE:
            last_error = None
        elif status in (TaskState.FAILED, TaskState.BLOCKED):
            last_error = row.reason
        else:
            last_error = getattr(row, "last_run_error", None)
        return cls(
            id=row.id,
            title=row.title,
            instruction=row.instruction,
            agent=row.agent,
            status=status,
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
            last_error=last_error,
            budget=Budget.from_json(getattr(row, "budget", None)),
        )


def task_json(task: Task) -> dict[str, Any]:
    """The one JSON shape of a task, for ``--json`` and the API alike: every field of
    :class:`Task` in order, times in ISO 8601 (UTC), lists for tuples, states by value.
    Hand-written rather than FastAPI's generic encoder, which spends half a second on a
    page of 1,000 dataclasses."""
    found: dict[str, Any] = {}
    for name in _TASK_FIELDS:
        value = getattr(task, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Budget):
            value = value.as_json()
        found[name] = value
    return found


_TASK_FIELDS = tuple(item.name for item in fields(Task))


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
    budget: Budget | None = None  # the task's own (the agent's default applies beneath)
    # What the task stands for, if anything: a PRD task's is ``prd:<path>#ACn``, from
    # which the pipeline knows which criterion to tick when its result lands.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class RunnerInfo:
    """A registered runner; ``online`` when it heartbeat in the last 60 s and has not
    stopped; ``current_tasks`` are the tasks it holds a lease on."""

    id: str
    name: str
    labels: tuple[str, ...]
    hostname: str
    pid: int
    concurrency: int
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    online: bool
    current_tasks: tuple[str, ...]


@dataclass(frozen=True)
class RunRecord:
    """One numbered record of a run, as a remote runner's outbox sends it in a batch
    (``store.runs.record_batch``): a step that started or finished (``phase``,
    ``status``, ``outcome``) or a log chunk (``text``). ``age``: how many seconds
    before the batch the record happened (a local runner that gathers a run's steps
    into one transaction keeps their times; 0, the store's now, for a remote one)."""

    seq: int
    kind: str  # "step" or "log"
    phase: str = ""
    status: str = ""  # "started" or "finished"
    outcome: str = ""
    text: str = ""
    age: float = 0.0


@dataclass(frozen=True)
class RunDetails:
    """What a runner reports with ``store.leases.complete`` besides the task's new state.

    ``outcome`` is the pipeline's word for how the run ended (e.g. "landed",
    "rejected"); it is kept as the run's ``result``. ``file_changes`` items have
    ``path``, ``kind`` and optionally ``lines_added``, ``lines_removed``, ``binary``;
    ``violations`` items ``type``, ``severity`` and optionally ``file``, ``line``,
    ``details``, ``suggestion``, ``gate``, ``phase``; ``decisions`` items ``phase``,
    ``decision``, ``reason`` and optionally ``timestamp`` (datetime or ISO 8601).
    ``tokens_in`` … ``turns`` are what the agent reported it used (None when nothing
    read its output: an agent without a preset)."""

    outcome: str
    exit_code: int | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    result_commit: str | None = None
    landed_commit: str | None = None
    file_changes: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    diff: str | None = None  # the result against its base, unified (capped when stored)
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    model: str | None = None
    turns: int | None = None


@dataclass(frozen=True)
class StepInfo:
    phase: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class RunInfo:
    """One attempt of a task. ``status`` is what became of it in the runbook's words
    (:class:`RunState`: running, succeeded, failed, escalated, cancelled, lost,
    released); ``lifecycle`` the stored run status it is derived from (running,
    finished, lost, cancelled, released); ``outcome`` the task state its runner
    reported; ``result`` the pipeline's own word for it (:attr:`RunDetails.outcome`).
    ``agent`` is the task's agent; ``tokens_in`` … ``turns`` what it reported it used
    (None when nothing read its output, or the run has not ended)."""

    id: str
    task_id: str
    task_title: str
    attempt: int
    runner_id: str
    fencing_token: int
    status: str
    lifecycle: str
    outcome: str | None
    result: str | None
    decision: str | None
    reason: str | None
    started_at: datetime
    ended_at: datetime | None
    exit_code: int | None
    wall_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    result_commit: str | None
    landed_commit: str | None
    agent: str
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    model: str | None
    turns: int | None


@dataclass(frozen=True)
class RunDetail(RunInfo):
    """A run with everything recorded about it (``capataz run show``)."""

    steps: list[StepInfo]
    file_changes: list[dict[str, Any]]
    violations: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    escalations: list[dict[str, Any]]
    log_tail: str
    diff: str | None = None


@dataclass(frozen=True)
class EscalationAnswer:
    """A human's answer to an escalation: approve, reject, modify or abort."""

    decision: str
    note: str
    decided_by: str
    answered_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the store knows it: never the token itself, only who it is."""

    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class ProposedTask:
    """One task of a directive as the planner proposed it: ``name`` is local to the
    directive, and ``depends_on`` names other tasks of it (or ids already queued), the
    way ``capataz task import`` files do. Nothing is queued until the directive is
    applied."""

    name: str
    title: str
    instruction: str
    agent: str | None = None
    depends_on: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "instruction": self.instruction,
            "agent": self.agent,
            "depends_on": list(self.depends_on),
            "labels": list(self.labels),
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, data: Any) -> ProposedTask:
        return cls(
            name=str(data["name"]),
            title=str(data.get("title") or ""),
            instruction=str(data["instruction"]),
            agent=data.get("agent"),
            depends_on=tuple(data.get("depends_on") or ()),
            labels=tuple(data.get("labels") or ()),
            priority=int(data.get("priority") or 0),
        )


@dataclass(frozen=True)
class Directive:
    """A planner directive (``store.directives``; docs/planner.md): what it proposes,
    why, which model proposed it at what cost, and what became of it."""

    id: str
    title: str
    rationale: str
    status: DirectiveStatus
    tasks: tuple[ProposedTask, ...]
    model: str
    usage: dict[str, Any]
    raw_answer: str | None
    reason: str | None
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    created_task_ids: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Any) -> Directive:
        return cls(
            id=row.id,
            title=row.title,
            rationale=row.rationale,
            status=DirectiveStatus(row.status),
            tasks=tuple(ProposedTask.from_json(item) for item in row.tasks),
            model=row.model,
            usage=dict(row.usage or {}),
            raw_answer=row.raw_answer,
            reason=row.reason,
            created_at=row.created_at,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            created_task_ids=tuple(row.created_task_ids or ()),
        )


def directive_json(directive: Directive) -> dict[str, Any]:
    """The one JSON shape of a directive, for ``--json`` and the API alike."""
    return {
        "id": directive.id,
        "title": directive.title,
        "rationale": directive.rationale,
        "status": directive.status.value,
        "tasks": [task.as_json() for task in directive.tasks],
        "model": directive.model,
        "usage": directive.usage,
        "raw_answer": directive.raw_answer,
        "reason": directive.reason,
        "created_at": directive.created_at.isoformat(),
        "decided_by": directive.decided_by,
        "decided_at": directive.decided_at.isoformat() if directive.decided_at else None,
        "created_task_ids": list(directive.created_task_ids),
    }
