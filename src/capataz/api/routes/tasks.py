"""Tasks: list (filter and page), add, show, requeue and cancel, with the body fields
``capataz task add`` and the runbook use (docs/runbook.md)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from capataz.agents.commands import resolve_agent
from capataz.api.auth import Access, requires
from capataz.api.deps import Offset, config_of, has_nul, ok, store_of
from capataz.api.errors import ApiError
from capataz.errors import CapatazError, TaskError
from capataz.intake.taskfile import default_title, new_task_id, parse_run_after
from capataz.models import utcnow
from capataz.names import validate_task_id
from capataz.store import Store, Task, TaskSpec, TaskState, TokenInfo

__all__ = ["get_task_or_404", "router"]

router = APIRouter(prefix="/ops/tasks", tags=["tasks"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
Operator = Annotated[TokenInfo, Depends(requires(Access.OPERATE))]
TaskId = Annotated[str, Path(max_length=200)]
MAX_PAGE = 10_000
# The columns are 32-bit on PostgreSQL: a bigger number is refused here, by name.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """PostgreSQL text cannot hold NUL characters (SQLite can): refuse them in
        every text field, on both databases, naming the field."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and has_nul(text) for text in texts):
            raise ValueError("text cannot contain NUL (\\x00) characters")
        return value


class NewTask(_Body):
    """A task to queue, like `capataz task add`."""

    instruction: str = Field(min_length=1, description="What the agent should do.")
    title: str | None = None
    agent: str | None = Field(default=None, description="Agent name from capataz.toml.")
    id: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    priority: Int32 = 0
    max_attempts: Annotated[int, Field(ge=1, le=2**31 - 1)] = 3
    labels: list[str] = Field(default_factory=list)
    run_after: str | None = Field(default=None, description="ISO time or a delay (10m, 2h).")
    idempotency_key: str | None = None
    allow_high: bool = False


class Requeue(_Body):
    backoff_seconds: float = Field(default=0.0, ge=0, le=30 * 86400)


class Cancel(_Body):
    reason: str | None = None


def get_task_or_404(store: Store, task_id: str) -> Task:
    if has_nul(task_id):  # no task id has one; PostgreSQL could not even compare it
        raise ApiError(404, f"no task {task_id}")
    try:
        return store.get_task(task_id)
    except TaskError:
        raise ApiError(404, f"no task {task_id}") from None


def task_json(task: Task) -> dict[str, Any]:
    """``task`` as JSON values, the way ``ok`` would encode it but several times faster:
    FastAPI's generic encoder spends half a second on a page of 1,000 dataclasses."""
    found: dict[str, Any] = {}
    for name in _TASK_FIELDS:
        value = getattr(task, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        found[name] = value
    return found


_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task))


@router.get("", summary="Tasks, oldest first; filter by status, page with limit/offset")
def list_tasks(
    request: Request,
    response: Response,
    _: Reader,
    status: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    found, total = store_of(request).page_tasks(status, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return ok([task_json(task) for task in found])


@router.post("", status_code=201, summary="Queue a task")
def add_task(request: Request, token: Operator, body: NewTask) -> dict[str, Any]:
    config = config_of(request)
    agent = body.agent or config.project.default_agent
    now = utcnow()
    checks = (
        ("agent", lambda: resolve_agent(config, agent)),
        ("run_after", lambda: parse_run_after(body.run_after, now) if body.run_after else None),
        ("id", lambda: validate_task_id(body.id) if body.id else new_task_id(now)),
    )
    checked: dict[str, Any] = {}
    for name, check in checks:
        try:
            checked[name] = check()
        except (CapatazError, ValueError, OverflowError) as exc:  # a delay past year 9999
            message = exc.message if isinstance(exc, CapatazError) else str(exc)
            raise ApiError(422, f"body.{name}: {message}") from None
    when, task_id = checked["run_after"], checked["id"]
    spec = TaskSpec(
        id=task_id,
        title=body.title or default_title(body.instruction),
        instruction=body.instruction,
        agent=agent,
        depends_on=tuple(dict.fromkeys(body.depends_on)),
        priority=body.priority,
        max_attempts=body.max_attempts,
        labels=tuple(body.labels),
        run_after=when,
        idempotency_key=body.idempotency_key or None,
        allow_high=body.allow_high,
    )
    try:
        task = store_of(request).add_tasks([spec], actor=f"api:{token.name}")[0]
    except TaskError as exc:
        raise ApiError(422 if body.depends_on else 409, str(exc)) from None
    return ok(task)


@router.get("/{task_id}", summary="One task")
def get_task(request: Request, _: Reader, task_id: TaskId) -> dict[str, Any]:
    return ok(get_task_or_404(store_of(request), task_id))


@router.post("/{task_id}/requeue", summary="Run an ended or escalated task again")
def requeue(
    request: Request, token: Operator, task_id: TaskId, body: Requeue | None = None
) -> dict[str, Any]:
    store = store_of(request)
    get_task_or_404(store, task_id)
    seconds = body.backoff_seconds if body else 0.0
    try:
        return ok(store.requeue(task_id, seconds, actor=f"api:{token.name}"))
    except TaskError as exc:
        raise ApiError(409, str(exc)) from None


@router.post("/{task_id}/cancel", summary="Cancel a task that has not ended")
def cancel(
    request: Request, token: Operator, task_id: TaskId, body: Cancel | None = None
) -> dict[str, Any]:
    store = store_of(request)
    get_task_or_404(store, task_id)
    try:
        return ok(store.cancel(task_id, body.reason if body else None, actor=f"api:{token.name}"))
    except TaskError as exc:
        raise ApiError(409, str(exc)) from None
