"""Task files for `capataz task import`: many tasks at once, written by hand or by a tool,
with dependencies between them by local names.

A file is JSON (``.json``) or YAML (``.yaml``/``.yml``) holding either a list of tasks
or ``{"tasks": [...]}``. Each task may have a ``name`` that others in the same file use
in ``depends_on``; anything in ``depends_on`` that is not such a name is taken as the id
of a task already in the store (the store refuses it if there is none, and refuses
cycles). Ids are generated here rather than by the store so that the names can be
mapped to them before anything is written, and back again in error messages.

Every problem becomes one :class:`TaskFileError` line naming the file, the task
(position and name) and the field, because the person fixing it needs exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from capataz.config import Config
from capataz.intake.errors import TaskFileError
from capataz.intake.tasks import PreparedTask, TaskRequest, parse_when, prepare

__all__ = [
    "TaskEntry",
    "TaskFileError",
    "load_taskfile",
    "parse_taskfile",
    "to_specs",
]

_FIX_FORMAT = 'write a list of tasks, or {"tasks": [...]}, each with at least an instruction'


class TaskEntry(BaseModel):
    """One task as written in a file. Unknown fields are errors: a misspelt
    ``depends-on`` silently ignored would run a task before what it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1)
    instruction: str = Field(min_length=1)
    title: str | None = None
    agent: str | None = Field(default=None, min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    priority: int = 0
    max_attempts: int = Field(default=3, ge=1)
    labels: list[str] = Field(default_factory=list)
    run_after: datetime | timedelta | None = None
    idempotency_key: str | None = Field(default=None, min_length=1)
    allow_high: bool = False
    # "200k", "2.5usd", "200k,2.5usd", 200000 or {tokens: 200000, usd: 2.5}; parsed by
    # the one intake, which names the task in its error
    budget: str | int | float | dict[str, str | int | float | None] | None = None

    @field_validator("instruction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("depends_on", "labels", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """``depends_on: build`` means ``[build]``; YAML makes that slip easy."""
        return [value] if isinstance(value, str) else value

    @field_validator("run_after", mode="before")
    @classmethod
    def _when(cls, value: Any) -> Any:
        """Absolute times are fixed now; delays stay delays until the tasks are added,
        so that "10m" means ten minutes after the import, not after parsing."""
        if value is None or isinstance(value, timedelta):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int | float | date):
            raise ValueError("expected an ISO time or a delay such as '10m'")
        return parse_when(value)


class _TaskFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskEntry] = Field(min_length=1)


def load_taskfile(path: Path) -> list[TaskEntry]:
    """Read and validate ``path``; the format follows the extension."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise TaskFileError(
            f"{path}: cannot tell the format from {suffix or 'a name without extension'!r}",
            fix="name the file *.json, *.yaml or *.yml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TaskFileError(
            f"{path}: cannot be read ({reason})",
            fix="check the path, its permissions and that it is UTF-8",
        ) from None
    return parse_taskfile(text, fmt="json" if suffix == ".json" else "yaml", source=str(path))


def parse_taskfile(text: str, *, fmt: str, source: str = "<tasks>") -> list[TaskEntry]:
    """Parse ``text`` (``fmt`` is "json" or "yaml") into validated entries with unique
    names."""
    data = _decode(text, fmt, source)
    if isinstance(data, list):
        data = {"tasks": data}
    if not isinstance(data, dict):
        raise TaskFileError(f"{source}: expected a list of tasks", fix=_FIX_FORMAT)
    try:
        entries = _TaskFile.model_validate(data).tasks
    except ValidationError as exc:
        raise _explain(exc, data, source) from None
    _unique(entries, "name", source)
    _unique(entries, "idempotency_key", source)
    return entries


def _unique(entries: Sequence[TaskEntry], field: str, source: str) -> None:
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        value = getattr(entry, field)
        if value is None:
            continue
        if value in seen:
            raise TaskFileError(
                f"{source}: task #{number}: {field} {value!r} already used by task #{seen[value]}",
                fix=f"give every task in the file its own {field}",
            )
        seen[value] = number


def _decode(text: str, fmt: str, source: str) -> Any:
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                f"{source}:{exc.lineno}: not valid JSON: {exc.msg}",
                fix="fix the syntax at that line",
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TaskFileError(
            f"{where}: not valid YAML: {problem}",
            fix="fix the syntax at that line (indentation, a missing ':' or quote)",
        ) from None


def _explain(exc: ValidationError, data: dict[str, Any], source: str) -> TaskFileError:
    """The first validation error as one line that says which task and which field."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if len(loc) < 2 or loc[0] != "tasks" or not isinstance(loc[1], int):
        key = ".".join(str(part) for part in loc) or "file"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        return TaskFileError(f"{source}: {key}: {message}{more}", fix=_FIX_FORMAT)
    index, field = loc[1], ".".join(str(part) for part in loc[2:])
    raw = data["tasks"][index] if isinstance(data.get("tasks"), list) else None
    name = raw.get("name") if isinstance(raw, dict) else None
    who = f"task #{index + 1}" + (f" {name!r}" if isinstance(name, str) else "")
    if not field:
        return TaskFileError(
            f"{source}: {who}: {message}{more}", fix="write each task as a mapping of fields"
        )
    if error["type"] == "missing":
        return TaskFileError(f"{source}: {who}: {field} is required{more}", fix=f"add {field}")
    if error["type"] == "extra_forbidden":
        return TaskFileError(
            f"{source}: {who}: unknown field {field!r}{more}",
            fix="remove it or check its spelling (fields: "
            + ", ".join(TaskEntry.model_fields)
            + ")",
        )
    return TaskFileError(f"{source}: {who}: {field}: {message}{more}", fix="correct that value")


def to_specs(
    entries: Sequence[TaskEntry],
    config: Config,
    *,
    now: datetime | None = None,
    new_id: Callable[[], str] | None = None,
) -> list[PreparedTask]:
    """The entries as tasks for the store, through the one intake
    (:func:`capataz.intake.tasks.prepare`): ids generated, local names in
    ``depends_on`` mapped to them, agents checked, each problem naming the task."""
    labels = [entry.name or f"#{number}" for number, entry in enumerate(entries, start=1)]

    def names(index: int, field: str) -> str:
        # "task a: unknown agent 'gpt'": the agent's message names the field itself.
        return f"task {labels[index]}" if field == "agent" else f"task {labels[index]}: {field}"

    requests = [
        TaskRequest(
            instruction=entry.instruction,
            title=entry.title,
            agent=entry.agent,
            name=entry.name,
            depends_on=entry.depends_on,
            priority=entry.priority,
            max_attempts=entry.max_attempts,
            labels=entry.labels,
            run_after=entry.run_after,
            idempotency_key=entry.idempotency_key,
            allow_high=entry.allow_high,
            budget=entry.budget,
        )
        for entry in entries
    ]
    return prepare(requests, config, names=names, now=now, new_id=new_id, batch=True)
