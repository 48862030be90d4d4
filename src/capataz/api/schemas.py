"""What the operator-facing routes answer (``/ops``, ``/runs``, ``/health``), as models:
each route declares ``response_model=Envelope[...]`` with one of these, so
``/openapi.json`` describes every answer and FastAPI checks each one before it leaves.

The fields mirror the store's records (:mod:`capataz.store.records`) one for one, in
their order, with the JSON types the answers always had: times as
``datetime.isoformat()`` strings (:data:`capataz.models.IsoTime`), tuples as lists.
``tests/api/test_schemas.py`` holds the models to the records, so a field added to a
record and forgotten here fails a test instead of vanishing from the answers. The
runner's own protocol is in :mod:`capataz.runner.protocol`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from capataz.models import IsoTime
from capataz.runner.protocol import BudgetOut
from capataz.store.statuses import DirectiveStatus, TaskState

__all__ = [
    "CredentialRequestOut",
    "CurrentRun",
    "Decided",
    "DirectiveAppliedOut",
    "DirectiveOut",
    "EscalationOut",
    "Forgotten",
    "HealthOut",
    "PlanOut",
    "ProposedTaskOut",
    "RunDetailOut",
    "RunOut",
    "RunnerStatusOut",
    "StepOut",
    "TaskOut",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TaskOut(_Out):
    """:class:`capataz.store.Task`."""

    id: str
    title: str
    instruction: str
    agent: str
    status: TaskState
    priority: int
    attempts: int
    max_attempts: int
    labels: list[str]
    run_after: IsoTime
    idempotency_key: str | None
    allow_high: bool
    base_commit: str | None
    lease_owner: str | None
    lease_expires_at: IsoTime | None
    fencing_token: int
    created_at: IsoTime
    updated_at: IsoTime
    reason: str | None
    depends_on: list[str]
    last_error: str | None
    budget: BudgetOut | None


class RunOut(_Out):
    """:class:`capataz.store.RunInfo`: one attempt of a task."""

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
    started_at: IsoTime
    ended_at: IsoTime | None
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


class StepOut(_Out):
    """:class:`capataz.store.StepInfo`."""

    phase: str
    started_at: IsoTime
    ended_at: IsoTime | None
    outcome: str | None


class RunDetailOut(RunOut):
    """:class:`capataz.store.RunDetail`: a run with everything recorded about it. The
    lists hold what the runner reported (:class:`capataz.store.RunDetails`), as JSON."""

    steps: list[StepOut]
    file_changes: list[dict[str, JsonValue]]
    violations: list[dict[str, JsonValue]]
    decisions: list[dict[str, JsonValue]]
    escalations: list[dict[str, JsonValue]]
    log_tail: str
    diff: str | None


class EscalationOut(_Out):
    """One escalation with its task's title and state (``store.escalations.list``)."""

    id: int
    task_id: str
    run_id: str | None
    reason: str
    opened_at: IsoTime
    decision: str | None
    decided_by: str | None
    note: str | None
    answered_at: IsoTime | None
    closed_at: IsoTime | None
    details: JsonValue
    task_title: str
    task_status: TaskState


class Decided(_Out):
    """An escalation answered: the task as it is now, and the answer given."""

    task: TaskOut
    decision: Literal["approve", "reject", "modify", "abort"]


class CurrentRun(_Out):
    """A run a runner is working on now (``store.runners.current_runs``)."""

    task_id: str
    task_title: str
    task_status: TaskState
    run_id: str | None
    started_at: IsoTime | None


class RunnerStatusOut(_Out):
    """A runner as the runbook shows it: ``status`` online or offline."""

    id: str
    name: str
    status: Literal["online", "offline"]
    last_seen_at: IsoTime
    current_tasks: list[str]
    current_runs: list[CurrentRun]
    labels: list[str]
    hostname: str
    pid: int
    concurrency: int
    started_at: IsoTime
    stopped_at: IsoTime | None


class Forgotten(_Out):
    id: str
    forgotten: Literal[True]


class HealthOut(_Out):
    status: Literal["ok"]
    version: str


class CredentialRequestOut(_Out):
    """:meth:`capataz.secrets.credentials.RequestState.as_json`."""

    id: str
    secret: str
    name: str
    description: str
    status: str
    agents: list[str]


class ProposedTaskOut(_Out):
    """:class:`capataz.store.ProposedTask`."""

    name: str
    title: str
    instruction: str
    agent: str | None
    depends_on: list[str]
    labels: list[str]
    priority: int


class DirectiveOut(_Out):
    """:class:`capataz.store.Directive` (:func:`capataz.store.directive_json`)."""

    id: str
    title: str
    rationale: str
    status: DirectiveStatus
    tasks: list[ProposedTaskOut]
    model: str
    usage: dict[str, JsonValue]
    raw_answer: str | None
    reason: str | None
    created_at: IsoTime
    decided_by: str | None
    decided_at: IsoTime | None
    created_task_ids: list[str]


class DirectiveAppliedOut(DirectiveOut):
    """An applied directive and the tasks it queued, in its order."""

    created_tasks: list[TaskOut]


class PlanOut(_Out):
    """The runbook's answer of ``POST /ops/gpt/run``
    (:meth:`capataz.planner.PlanResult.as_json`)."""

    directives_created: int
    tasks_created: int
    directives: list[DirectiveOut]
    model: str
    usage: dict[str, JsonValue]
