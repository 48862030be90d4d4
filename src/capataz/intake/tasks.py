"""The one way a task enters the queue, for ``capataz task add``, ``capataz task
import`` and ``POST /ops/tasks`` alike.

Each front end parses its own input (options, a file, a JSON body) into
:class:`TaskRequest` values and calls :func:`prepare`, then :func:`submit`. Everything
between is here, once: defaults (title, agent), validation, generated ids, local names
in ``depends_on``, idempotency keys, and the store's refusals told in the caller's
words. Preparing is separate from submitting so that a front end can refuse bad input
before it opens (or creates) a database.

Front ends name fields differently (``--run-after``, ``body.run_after``, ``task #2
'b': run_after``); they pass a :data:`FieldNames` so that every message names the field
the way the person typed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from capataz.agents.commands import resolve_agent
from capataz.config import Config
from capataz.errors import CapatazError, TaskError, UnknownAgentError
from capataz.intake.errors import InvalidTask
from capataz.models import utcnow
from capataz.names import new_task_id, validate_task_id
from capataz.store import NewTask, Store, Task
from capataz.units import Budget, parse_budget, parse_duration

__all__ = [
    "FieldNames",
    "PreparedTask",
    "Submitted",
    "TaskRequest",
    "default_title",
    "parse_run_after",
    "parse_task_budget",
    "parse_when",
    "plain_names",
    "prepare",
    "submit",
]

_TITLE_LENGTH = 80
# Integer columns are 32-bit on PostgreSQL; a bigger number is refused here, by name.
_INT32 = (-(2**31), 2**31 - 1)
# How messages speak of a single task added without an id: its id means nothing yet.
NEW_TASK = "the new task"

FieldNames = Callable[[int, str], str]
"""How a front end names ``field`` of its ``index``-th task in messages; "" for none."""


def plain_names(index: int, field: str) -> str:
    """Fields by their own name, for callers in code."""
    return field


@dataclass(frozen=True)
class TaskRequest:
    """A task as a person or program asks for it, before defaults and checks.
    ``name`` lets other requests of the same batch depend on it; ``run_after`` is a
    moment, a delay from now (``timedelta``, ``10m``, seconds) or an ISO time."""

    instruction: str
    title: str | None = None
    agent: str | None = None
    id: str | None = None
    name: str | None = None
    depends_on: Sequence[str] = ()
    priority: int = 0
    max_attempts: int = 3
    labels: Sequence[str] = ()
    run_after: str | float | date | timedelta | None = None
    idempotency_key: str | None = None
    allow_high: bool = False
    # "200k", "2.5usd", "200k,2.5usd", a number of tokens, {"tokens": …, "usd": …}
    budget: Any = None


@dataclass(frozen=True)
class PreparedTask:
    """A request ready for the store: the task to add (with its id) and what messages
    call it: its name, ``#N`` in a batch, "the new task", or the id it was given."""

    label: str
    spec: NewTask
    generated_id: bool = field(default=True)


@dataclass(frozen=True)
class Submitted:
    """What became of one prepared task: the queued task, and whether it was added now
    (False: its idempotency key already stood for ``task``)."""

    label: str
    task: Task
    created: bool


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


def parse_task_budget(value: Any, name: str = "budget") -> Budget | None:
    """A task's budget as any front end takes it (``--budget 200k``, ``budget: 2.5usd``
    in plan.yaml, ``"budget": {"tokens": 200000}`` in a body; see
    :func:`capataz.units.parse_budget`), or None for the agent's default. ``name`` is
    how the front end calls the field, for the one-line InvalidTask."""
    if value is None:
        return None
    try:
        return parse_budget(value)
    except ValueError as exc:
        fix = "e.g. 200k, 2.5usd or 200k,2.5usd"
        raise InvalidTask(f"{name}: {exc}", field="budget", fix=fix) from None


def prepare(
    requests: Sequence[TaskRequest],
    config: Config,
    *,
    names: FieldNames = plain_names,
    now: datetime | None = None,
    new_id: Callable[[], str] | None = None,
    batch: bool = False,
) -> list[PreparedTask]:
    """Check ``requests`` and turn them into tasks for the store, all or none: ids
    generated where not given, local names in ``depends_on`` turned into those ids.
    Agents are checked against ``config`` here because the store does not know which
    agents exist; dependencies on queued tasks are checked by the store. An unnamed
    task is "#N" in messages when ``batch`` (a file) or there are several, otherwise
    "the new task"."""
    now = now or utcnow()
    make_id = new_id or (lambda: new_task_id(now))
    single = len(requests) == 1 and not batch
    ids = [_task_id(request, index, names, make_id) for index, request in enumerate(requests)]
    _unique(requests, ids, names)
    by_name = {r.name: tid for r, tid in zip(requests, ids, strict=True) if r.name is not None}
    prepared: list[PreparedTask] = []
    for index, (request, task_id) in enumerate(zip(requests, ids, strict=True)):
        say = _Say(names, index)
        _check(request, say)
        agent = request.agent or config.project.default_agent
        try:
            resolve_agent(config, agent)
        except UnknownAgentError as exc:
            raise UnknownAgentError(say("agent", exc.message), fix=exc.fix) from None
        if request.name is not None:
            label = request.name
        elif request.id is not None:
            label = request.id
        else:
            label = NEW_TASK if single else f"#{index + 1}"
        spec = NewTask(
            id=task_id,
            title=request.title or default_title(request.instruction),
            instruction=request.instruction,
            agent=agent,
            depends_on=tuple(dict.fromkeys(by_name.get(d, d) for d in request.depends_on)),
            priority=request.priority,
            max_attempts=request.max_attempts,
            labels=tuple(dict.fromkeys(request.labels)),
            run_after=_run_after(request.run_after, now, say),
            idempotency_key=request.idempotency_key or None,
            allow_high=request.allow_high,
            budget=parse_task_budget(request.budget, names(index, "budget") or "budget"),
        )
        prepared.append(PreparedTask(label, spec, generated_id=request.id is None))
    return prepared


def submit(store: Store, prepared: Sequence[PreparedTask], *, actor: str) -> list[Submitted]:
    """Add ``prepared`` to the queue in one transaction. A refusal of the store keeps
    its type (unknown dependency, cycle, id taken) but speaks of the tasks by their
    labels: the ids generated a moment ago mean nothing to the person."""
    try:
        tasks = store.tasks.add_many([item.spec for item in prepared], actor=actor)
    except TaskError as exc:
        raise type(exc)(_relabel(exc.message, prepared), fix=exc.fix) from None
    return [
        Submitted(item.label, task, created=task.id == item.spec.id)
        for item, task in zip(prepared, tasks, strict=True)
    ]


class _Say:
    """Messages about one request, naming fields the front end's way."""

    def __init__(self, names: FieldNames, index: int) -> None:
        self.names = names
        self.index = index

    def __call__(self, field: str, problem: str) -> str:
        name = self.names(self.index, field)
        return f"{name}: {problem}" if name else problem

    def invalid(self, field: str, problem: str, fix: str) -> InvalidTask:
        return InvalidTask(self(field, problem), field=field, fix=fix)


def _task_id(
    request: TaskRequest, index: int, names: FieldNames, make_id: Callable[[], str]
) -> str:
    if request.id is None or request.id == "":
        return make_id()
    try:
        return validate_task_id(request.id)
    except CapatazError as exc:
        raise _Say(names, index).invalid("id", exc.message, exc.fix or "") from None


def _unique(requests: Sequence[TaskRequest], ids: Sequence[str], names: FieldNames) -> None:
    """Within one batch a name, an id or an idempotency key stands for one task."""
    columns: dict[str, list[str | None]] = {
        "name": [r.name for r in requests],
        "id": list(ids),
        "idempotency_key": [r.idempotency_key or None for r in requests],
    }
    for what, values in columns.items():
        seen: dict[str, int] = {}
        for index, value in enumerate(values):
            if value is None:
                continue
            if value in seen:
                problem = f"{value!r} already used by task #{seen[value] + 1}"
                fix = f"give every task its own {what}"
                raise _Say(names, index).invalid(what, problem, fix)
            seen[value] = index


def _check(request: TaskRequest, say: _Say) -> None:
    """What the store would take but should not: blank instructions, impossible
    numbers, NUL characters (PostgreSQL text cannot hold them; SQLite can)."""
    if not request.instruction.strip():
        raise say.invalid("instruction", "the instruction is empty", "say what the agent should do")
    if request.max_attempts < 1:
        problem = f"{request.max_attempts}: must be at least 1"
        raise InvalidTask(
            f"{say.names(say.index, 'max_attempts')} {problem}".strip(),
            field="max_attempts",
            fix="use 1 or more",
        )
    for name, number in (("priority", request.priority), ("max_attempts", request.max_attempts)):
        if not _INT32[0] <= number <= _INT32[1]:
            raise say.invalid(name, f"{number} is out of range", f"use {_INT32[0]}..{_INT32[1]}")
    texts: dict[str, list[str | None]] = {
        "instruction": [request.instruction],
        "title": [request.title],
        "agent": [request.agent],
        "name": [request.name],
        "idempotency_key": [request.idempotency_key],
        "run_after": [request.run_after if isinstance(request.run_after, str) else None],
        "labels": [*request.labels],
        "depends_on": [*request.depends_on],
    }
    for name, values in texts.items():
        if any(value is not None and "\x00" in value for value in values):
            raise say.invalid(
                name, "text cannot contain NUL (\\x00) characters", "remove the NUL characters"
            )


def _run_after(
    value: str | float | date | timedelta | None, now: datetime, say: _Say
) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, timedelta):
            return now + value
        return parse_run_after(value, now)
    except (ValueError, OverflowError) as exc:  # OverflowError: a delay past year 9999
        raise say.invalid("run_after", str(exc), "e.g. 10m, 2h or 2030-01-02T03:04") from None


def _relabel(message: str, prepared: Sequence[PreparedTask]) -> str:
    """Generated ids are random, so replacing them cannot touch anything else."""
    for item in prepared:
        if not item.generated_id or item.spec.id is None:
            continue
        spoken = item.label if item.label == NEW_TASK else f"task {item.label}"
        message = message.replace(f"task {item.spec.id}", spoken)
        message = message.replace(item.spec.id, item.label)
    return message
