"""Tasks: list (filter and page), add, show, requeue and cancel, with the body fields
``capataz task add`` and the runbook use (docs/runbook.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, Offset, config_of, has_nul, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.schemas import TaskOut
from capataz.intake.tasks import TaskRequest, prepare, submit
from capataz.runner.protocol import Envelope
from capataz.store import Store, Task, TaskState, TokenInfo, task_json

__all__ = ["get_task_or_404", "router", "task_json"]

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


class TaskBody(_Body):
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
    budget: str | int | float | dict[str, str | int | float | None] | None = Field(
        default=None,
        description=(
            "What one run may use: tokens ('200k', 200000), dollars ('2.5usd', '$2.5'), "
            'both (\'200k,2.5usd\') or {"tokens": 200000, "usd": 2.5}; '
            "null: the agent's default."
        ),
    )


class Requeue(_Body):
    backoff_seconds: float = Field(default=0.0, ge=0, le=30 * 86400)


class Cancel(_Body):
    reason: str | None = None


def get_task_or_404(store: Store, task_id: str) -> Task:
    if has_nul(task_id):  # no task id has one; PostgreSQL could not even compare it
        raise ApiError(404, f"no task {task_id}")
    return store.tasks.get(task_id)  # NoSuchTaskError: 404 (api/errors.py)


@router.get(
    "",
    summary="Tasks, oldest first; filter by status, page with limit/offset",
    response_model=Envelope[list[TaskOut]],
)
def list_tasks(
    request: Request,
    response: Response,
    _: Reader,
    status: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    offset: Offset = 0,
) -> Answer:
    found, total = store_of(request).tasks.page(status, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return ok([task_json(task) for task in found])


# Refusals (invalid input, unknown dependency, a state that does not allow the change)
# reach the client through the one table of statuses in capataz.api.errors.
@router.post("", status_code=201, summary="Queue a task", response_model=Envelope[TaskOut])
def add_task(request: Request, token: Operator, body: TaskBody) -> Answer:
    prepared = prepare([TaskRequest(**body.model_dump())], config_of(request), names=_in_body)
    added = submit(store_of(request), prepared, actor=f"api:{token.name}")[0]
    return ok(task_json(added.task))


def _in_body(index: int, field: str) -> str:
    return f"body.{field}"


@router.get("/{task_id}", summary="One task", response_model=Envelope[TaskOut])
def get_task(request: Request, _: Reader, task_id: TaskId) -> Answer:
    return ok(task_json(get_task_or_404(store_of(request), task_id)))


@router.post(
    "/{task_id}/requeue",
    summary="Run an ended or escalated task again",
    response_model=Envelope[TaskOut],
)
def requeue(
    request: Request, token: Operator, task_id: TaskId, body: Requeue | None = None
) -> Answer:
    store = store_of(request)
    get_task_or_404(store, task_id)
    seconds = body.backoff_seconds if body else 0.0
    return ok(task_json(store.tasks.requeue(task_id, seconds, actor=f"api:{token.name}")))


@router.post(
    "/{task_id}/cancel",
    summary="Cancel a task that has not ended",
    response_model=Envelope[TaskOut],
)
def cancel(
    request: Request, token: Operator, task_id: TaskId, body: Cancel | None = None
) -> Answer:
    store = store_of(request)
    get_task_or_404(store, task_id)
    reason = body.reason if body else None
    return ok(task_json(store.tasks.cancel(task_id, reason, actor=f"api:{token.name}")))
