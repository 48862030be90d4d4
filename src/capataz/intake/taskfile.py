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
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from capataz.agents.commands import resolve_agent
from capataz.config import Config
from capataz.errors import CapatazError, UnknownAgentError
from capataz.models import utcnow
from capataz.store import NewTask
from capataz.units import parse_duration

__all__ = [
    "ImportedTask",
    "TaskEntry",
    "TaskFileError",
    "default_title",
    "load_taskfile",
    "new_task_id",
    "parse_run_after",
    "parse_taskfile",
    "parse_when",
    "to_specs",
]

_FIX_FORMAT = 'write a list of tasks, or {"tasks": [...]}, each with at least an instruction'
_TITLE_LENGTH = 80


class TaskFileError(CapatazError):
    """A task file cannot be read, parsed or validated."""


def new_task_id(now: datetime | None = None) -> str:
    """The store's id format: sortable by creation time, random enough to never clash."""
    return f"t-{(now or utcnow()):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def default_title(instruction: str) -> str:
    """A title from the instruction's first line, for people who give only the
    instruction: lists and commits need something short to show."""
    first = next((line.strip() for line in instruction.splitlines() if line.strip()), "")
    return first if len(first) <= _TITLE_LENGTH else first[: _TITLE_LENGTH - 1] + "…"


def parse_when(value: str | float | date) -> datetime | timedelta:
    """A moment or a delay: an ISO time (``2030-01-02T03:04``; without a zone it is
    local time, as a person at a terminal means it) is a moment; ``10m``, ``90s`` or a
    bare number of seconds is a delay, to be counted from when the task is added."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.astimezone()
    if isinstance(value, date):
        return datetime.combine(value, time()).astimezone()
    if isinstance(value, str):
        try:
            return parse_when(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an ISO time (2030-01-02T03:04:05) "
            "nor a delay such as '10m' or '1h'"
        ) from None


def parse_run_after(value: str | float | date, now: datetime | None = None) -> datetime:
    """The moment ``value`` (see :func:`parse_when`) means, delays counted from ``now``."""
    when = parse_when(value)
    return (now or utcnow()) + when if isinstance(when, timedelta) else when


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


@dataclass(frozen=True)
class ImportedTask:
    """One entry of the file, ready for the store: what to call it in output (its name,
    or ``#N`` for an unnamed one) and the spec with its generated id."""

    label: str
    spec: NewTask


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
    new_id: Callable[[], str] = new_task_id,
) -> list[ImportedTask]:
    """Give every entry an id and turn local names in ``depends_on`` into those ids.
    Agents are checked against ``config`` here, with the task named, because the store
    does not know which agents exist."""
    now = now or utcnow()
    ids = [new_id() for _ in entries]
    by_name = {e.name: tid for e, tid in zip(entries, ids, strict=True) if e.name is not None}
    result: list[ImportedTask] = []
    for number, (entry, task_id) in enumerate(zip(entries, ids, strict=True), start=1):
        label = entry.name or f"#{number}"
        agent = entry.agent or config.project.default_agent
        try:
            resolve_agent(config, agent)
        except UnknownAgentError as exc:
            raise UnknownAgentError(f"task {label}: {exc.message}", fix=exc.fix) from None
        run_after = entry.run_after
        if isinstance(run_after, timedelta):
            run_after = now + run_after
        spec = NewTask(
            id=task_id,
            title=entry.title or default_title(entry.instruction),
            instruction=entry.instruction,
            agent=agent,
            depends_on=tuple(dict.fromkeys(by_name.get(d, d) for d in entry.depends_on)),
            priority=entry.priority,
            max_attempts=entry.max_attempts,
            labels=tuple(entry.labels),
            run_after=run_after,
            idempotency_key=entry.idempotency_key,
            allow_high=entry.allow_high,
        )
        result.append(ImportedTask(label=label, spec=spec))
    return result
