"""The MCP tools: what an agent may ask capataz, each with the one kind of access
(:class:`capataz.store.access.Access`) it needs.

Each tool is a plain function over the store and the configuration, with its input
as a pydantic model: the model's JSON schema is what ``tools/list`` shows, and the
same model validates a call, so the schema an agent reads is the one it is held to.
Nothing here knows about transports or tokens beyond the caller's name for the audit
trail; :mod:`capataz.mcpserver.server` checks roles before a tool runs.

Answers are plain JSON (times in ISO 8601, states by value) with every secret value
masked, as the API's are: a run's log is stored redacted already, and masking again
on the way out costs little and covers a value added to the vault since.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from capataz.config import Config
from capataz.intake.errors import InvalidTask
from capataz.intake.tasks import TaskRequest, plain_names, prepare, submit
from capataz.redaction import redact_data
from capataz.store import RunDetail, Store, Task, TaskState, TokenInfo, task_json
from capataz.store.access import Access

__all__ = [
    "SUBTASK_LABEL",
    "TOOLS",
    "Tool",
    "subtask_key",
]

SUBTASK_LABEL = "subtask"
MAX_PAGE = 200
MAX_LOG_LINES = 2000
# A subtask's name is part of its idempotency key and shows in lists: short and plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STATES = ", ".join(state.value for state in TaskState)

Id = Annotated[str, Field(min_length=1, max_length=200)]


class _Input(BaseModel):
    """Tool arguments: unknown ones are refused, so a typo is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ListTasksInput(_Input):
    status: str | None = Field(
        default=None, description=f"Only tasks in this state: {_STATES}. Omit for all."
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="Tasks per page.")
    offset: int = Field(default=0, ge=0, le=2**31 - 1, description="Tasks to skip.")


class ShowTaskInput(_Input):
    task_id: Id = Field(description="The task's id, e.g. from list_tasks.")


class ShowRunInput(_Input):
    run_id: Id = Field(description="The run's id, e.g. from show_task's attempts.")
    include_diff: bool = Field(
        default=False, description="Also return the result's diff against its base."
    )


class RunLogInput(_Input):
    run_id: Id = Field(description="The run's id, e.g. from show_task's attempts.")
    lines: int = Field(
        default=200, ge=1, le=MAX_LOG_LINES, description="How many of the last lines."
    )


class AddSubtaskInput(_Input):
    parent_task_id: Id = Field(
        description="Your own task's id: the subtask runs on top of its result, and "
        "never if it fails."
    )
    name: str = Field(
        description="A short name for the subtask, unique under the parent (letters, "
        "digits, '.', '_', '-'; at most 64). The same name again returns the subtask "
        "already queued instead of a second one."
    )
    instruction: str = Field(min_length=1, description="What the subtask's agent should do.")
    title: str | None = Field(default=None, description="Short title; default: from the name.")
    agent: str | None = Field(
        default=None, description="Agent from capataz.toml; default: the parent's agent."
    )
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    labels: list[str] = Field(default_factory=list, description="Labels besides 'subtask'.")
    budget: str | int | float | None = Field(
        default=None,
        description="What one run may use: '200k' tokens, '2.5usd', '200k,2.5usd'; "
        "default: the agent's.",
    )


ToolFunction = Callable[[Store, Config, TokenInfo, Any], dict[str, Any]]


@dataclass(frozen=True)
class Tool:
    """One tool: its name and description for ``tools/list``, its input model, the
    access it needs, and the function that answers it."""

    name: str
    description: str
    access: Access
    input: type[_Input]
    run: ToolFunction

    def schema(self) -> dict[str, Any]:
        return self.input.model_json_schema()


def subtask_key(parent_id: str, name: str) -> str:
    """The idempotency key of subtask ``name`` of ``parent_id``: a retried call finds
    the task the first one queued (``store.tasks.with_key_prefix`` finds them all)."""
    return f"{subtask_prefix(parent_id)}{name}"


def subtask_prefix(parent_id: str) -> str:
    return f"subtask:{parent_id}:"


def plain(value: Any) -> Any:
    """``value`` as JSON: dataclasses as objects, times in ISO 8601, enums by value,
    tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def masked(data: dict[str, Any]) -> dict[str, Any]:
    """What leaves the server: JSON with secret values masked."""
    found: dict[str, Any] = redact_data(plain(data))
    return found


# -- the tools ---------------------------------------------------------------------------


def _summary(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "title": task.title,
        "status": task.status.value,
        "reason": task.reason,
        "agent": task.agent,
        "priority": task.priority,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "labels": list(task.labels),
        "depends_on": list(task.depends_on),
        "updated_at": task.updated_at.isoformat(),
    }


def list_tasks(
    store: Store, config: Config, caller: TokenInfo, args: ListTasksInput
) -> dict[str, Any]:
    status: TaskState | None = None
    if args.status:
        try:
            status = TaskState(args.status.strip().lower())
        except ValueError:
            raise InvalidTask(
                f"status: unknown state {args.status!r}",
                field="status",
                fix=f"use one of {_STATES}",
            ) from None
    found, total = store.tasks.page(status, limit=args.limit, offset=args.offset)
    following = args.offset + len(found)
    return {
        "tasks": [_summary(task) for task in found],
        "total": total,
        "offset": args.offset,
        "limit": args.limit,
        "next_offset": following if following < total else None,
    }


def _attempt(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "attempt": run.attempt,
        "status": run.status,
        "result": run.result,
        "decision": run.decision,
        "reason": run.reason,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    }


def show_task(
    store: Store, config: Config, caller: TokenInfo, args: ShowTaskInput
) -> dict[str, Any]:
    task = store.tasks.get(args.task_id)
    dependencies = [store.tasks.get(dependency) for dependency in task.depends_on]
    runs = store.runs.list(task_id=task.id, limit=100)
    subtasks = store.tasks.with_key_prefix(subtask_prefix(task.id))
    return {
        **task_json(task),
        "dependencies": [
            {"id": other.id, "title": other.title, "status": other.status} for other in dependencies
        ],
        "runs": [_attempt(run) for run in runs],
        "subtasks": [_summary(sub) for sub in subtasks],
    }


def show_run(store: Store, config: Config, caller: TokenInfo, args: ShowRunInput) -> dict[str, Any]:
    run: RunDetail = store.runs.get(args.run_id)
    found: dict[str, Any] = plain(run)
    log = found.pop("log_tail") or ""
    diff = found.pop("diff")
    found["log_lines"] = len(log.splitlines())
    if args.include_diff:
        found["diff"] = diff
    return found


def run_log(store: Store, config: Config, caller: TokenInfo, args: RunLogInput) -> dict[str, Any]:
    run = store.runs.get(args.run_id)
    lines = (run.log_tail or "").splitlines()
    kept = lines[-args.lines :]
    return {
        "run_id": run.id,
        "task_id": run.task_id,
        "status": run.status,
        "lines": len(kept),
        "truncated": len(kept) < len(lines),
        "log": "\n".join(kept),
    }


def add_subtask(
    store: Store, config: Config, caller: TokenInfo, args: AddSubtaskInput
) -> dict[str, Any]:
    if not _NAME.match(args.name):
        raise InvalidTask(
            f"name: {args.name!r} is not a subtask name",
            field="name",
            fix="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    parent = store.tasks.get(args.parent_task_id)
    request = TaskRequest(
        instruction=args.instruction,
        title=args.title or args.name,
        agent=args.agent or parent.agent,
        depends_on=(parent.id,),
        priority=args.priority,
        labels=(SUBTASK_LABEL, *args.labels),
        idempotency_key=subtask_key(parent.id, args.name),
        budget=args.budget,
    )
    prepared = prepare([request], config, names=plain_names)  # the arguments' own names
    added = submit(store, prepared, actor=f"mcp:{caller.name}")[0]
    task = added.task
    if added.created:
        message = f"queued subtask {args.name!r} as {task.id}, after {parent.id}"
    else:
        message = f"already queued: subtask {args.name!r} of {parent.id} is {task.id}"
    return {
        "message": message,
        "created": added.created,
        "task": _summary(task),
        "parent": {"id": parent.id, "status": parent.status},
    }


TOOLS: tuple[Tool, ...] = (
    Tool(
        "list_tasks",
        "List capataz tasks, oldest first, optionally in one state, a page at a time "
        "(next_offset is where the next page starts, null after the last).",
        Access.READ,
        ListTasksInput,
        list_tasks,
    ),
    Tool(
        "show_task",
        "One task: its state and reason, instruction, dependencies with their states, "
        "its attempts (runs) and the subtasks queued under it.",
        Access.READ,
        ShowTaskInput,
        show_task,
    ),
    Tool(
        "show_run",
        "One run (attempt) of a task: steps, file changes, violations, decisions, "
        "escalations and usage. The log is read with run_log.",
        Access.READ,
        ShowRunInput,
        show_run,
    ),
    Tool(
        "run_log",
        "The last lines of a run's log (secret values are masked).",
        Access.READ,
        RunLogInput,
        run_log,
    ),
    Tool(
        "add_subtask",
        "Queue a subtask of your own task: it depends on the parent, so it runs on top "
        "of the parent's result and never if the parent fails; it carries the label "
        "'subtask'. Calling again with the same parent and name returns the subtask "
        "already queued.",
        Access.OPERATE,
        AddSubtaskInput,
        add_subtask,
    ),
)
