"""A plan: compose the context, ask the model, and store what it proposed, each
directive validated the way ``capataz task import`` validates a file (agents, names,
dependencies, cycles) before anything is written.

A valid directive is stored PENDING (with ``[planner] auto_apply``: its tasks queued
and the directive APPLIED, in one transaction); an invalid one is stored REJECTED with
the reason and its raw JSON (masked), so a person can see what the model said, and no
task of it is ever queued. An answer that is not the JSON asked for at all is kept the
same way, as one REJECTED directive, and reported as an error."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capataz import redaction
from capataz.config import Config, PlannerConfig
from capataz.errors import CapatazError, TaskError
from capataz.intake.errors import DependencyCycleError, InvalidTask, UnknownDependencyError
from capataz.intake.tasks import PreparedTask, TaskRequest, prepare
from capataz.planner.client import Answer, ask
from capataz.planner.context import compose
from capataz.planner.errors import (
    PlannerAnswerError,
    PlannerCredentialWaiting,
    PlannerError,
    PlannerNotConfigured,
)
from capataz.planner.usage import ANSWERED, keep_call, priced
from capataz.secrets.credentials import requests_for
from capataz.secrets.vault import MasterKey, Vault
from capataz.store import (
    Directive,
    DirectiveStatus,
    NoSuchTaskError,
    ProposedTask,
    Store,
    StoreUnavailable,
    Task,
    directive_json,
)
from capataz.store.graph import find_cycle

__all__ = [
    "PlanResult",
    "apply_directive",
    "check_tasks",
    "plan",
    "planner_key",
    "record",
    "require_planner",
]

UNREADABLE = "(unreadable planner answer)"


@dataclass(frozen=True)
class PlanResult:
    """What one plan stored, in the runbook's shape (:meth:`as_json`)."""

    directives: list[Directive]
    tasks_created: int
    model: str
    usage: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "directives_created": len(self.directives),
            "tasks_created": self.tasks_created,
            "directives": [directive_json(d) for d in self.directives],
            "model": self.model,
            "usage": self.usage,
        }


class _TaskAnswer(BaseModel):
    """One proposed task as the model wrote it. Unknown fields are errors, as in task
    files: a misspelt ``depends-on`` ignored would run a task before what it needs."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    title: str = ""
    instruction: str = Field(min_length=1)
    agent: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    priority: int | None = None


class _DirectiveAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1)
    rationale: str = ""
    tasks: list[_TaskAnswer]


def require_planner(config: Config) -> PlannerConfig:
    if config.planner is None:
        raise PlannerNotConfigured(
            "capataz.toml has no [planner] table, so there is no planner to run",
            fix="add [planner] with endpoint and model (docs/planner.md)",
        )
    return config.planner


def planner_key(store: Store, config: Config, state_dir: Path | None) -> str:
    """The planner's API key from the vault, masked from now on in all this process
    writes; :class:`PlannerCredentialWaiting` naming the request when it is not there."""
    name = require_planner(config).credential
    if not store.secrets.rows([name]):
        request = next(iter(requests_for(config, name)), None)
        waiting = (
            f"credential request {request} ({name}) is WAITING"
            if request
            else f"secret {name} is not in the vault (no credential request declares it)"
        )
        raise PlannerCredentialWaiting(
            f"the planner cannot run: {waiting}",
            fix=f"provide it with `capataz secret set {name}` or the panel's Setup",
        )
    # Without a state directory (an embedded API) the key can only come from the
    # environment; create=False: a planner never mints a key the vault was not written with.
    key = MasterKey.load(state_dir if state_dir is not None else Path(), create=False)
    value = Vault(store, key).get(name)
    redaction.add({name: value})
    return value


def plan(
    store: Store,
    config: Config,
    *,
    api_key: str,
    repo_root: Path | None,
    goal: str | None = None,
    environment: str | None = None,
    actor: str = "planner",
    sleep: Callable[[float], object] = time.sleep,
) -> PlanResult:
    """Ask the planner for directives about what ``store`` holds now and store them;
    the call itself is kept with what it used (:mod:`capataz.planner.usage`), whether
    it succeeded or not."""
    planner = require_planner(config)
    composed = compose(store, config, planner, repo_root, goal=goal, environment=environment)
    try:
        answer = priced(ask(planner, api_key, composed.messages, sleep=sleep), planner.price)
    except PlannerError as exc:
        keep_call(store, planner.model, exc.code, error=str(exc), actor=actor)
        raise
    try:
        result = record(store, config, answer, actor=actor, auto_apply=planner.auto_apply)
    except PlannerAnswerError as exc:  # kept as one REJECTED directive
        keep_call(
            store,
            answer.model,
            exc.code,
            usage=answer.usage,
            directives=1,
            error=str(exc),
            actor=actor,
        )
        raise
    keep_call(
        store,
        answer.model,
        ANSWERED,
        usage=answer.usage,
        directives=len(result.directives),
        actor=actor,
    )
    return result


def record(
    store: Store, config: Config, answer: Answer, *, actor: str, auto_apply: bool = False
) -> PlanResult:
    """Store the directives of ``answer``, each validated on its own."""
    try:
        data = json.loads(answer.text)
    except ValueError as exc:
        _unreadable(store, answer, f"not JSON: {exc}", actor)
    items = data.get("directives") if isinstance(data, dict) else None
    if not isinstance(items, list):
        _unreadable(store, answer, 'no "directives" list at the top level', actor)
    stored: list[Directive] = []
    created = 0
    for index, item in enumerate(items):
        directive, tasks = _store_one(
            store, config, item, index, answer, actor=actor, auto_apply=auto_apply
        )
        stored.append(directive)
        created += len(tasks)
    return PlanResult(stored, created, answer.model, answer.usage)


def check_tasks(
    store: Store, config: Config, proposed: Sequence[ProposedTask]
) -> list[PreparedTask]:
    """The directive's tasks ready for the store, or the first reason they are not:
    intake's checks (agents, blank instructions, names used twice), then dependencies
    (names of this directive or ids already queued), then cycles."""
    if not proposed:
        raise InvalidTask(
            "the directive proposes no tasks", field="tasks", fix="a directive needs tasks"
        )
    names = [task.name for task in proposed]
    requests = [
        TaskRequest(
            instruction=task.instruction,
            title=task.title or None,
            agent=task.agent,
            name=task.name,
            depends_on=task.depends_on,
            labels=task.labels,
            priority=task.priority,
        )
        for task in proposed
    ]
    prepared = prepare(requests, config, names=lambda i, field: f"task {names[i]!r} {field}")
    local = set(names)
    for task in proposed:
        for dep in task.depends_on:
            if dep not in local and not _queued(store, dep):
                raise UnknownDependencyError(
                    f"task {task.name!r} depends on {dep!r}, which is neither a task of "
                    "this directive nor a queued task",
                    fix="depends_on names tasks of the same directive",
                )
    cycle = find_cycle({t.name: [d for d in t.depends_on if d in local] for t in proposed})
    if cycle:
        raise DependencyCycleError(
            f"dependency cycle: {' -> '.join(cycle)}",
            fix="remove one of these dependencies; a task in a cycle could never run",
        )
    return prepared


def apply_directive(
    store: Store, config: Config, directive_id: str, *, actor: str
) -> tuple[Directive, list[Task]]:
    """Queue a PENDING directive's tasks (checked again: the configuration may have
    changed since it was proposed) and mark it APPLIED, in one transaction."""
    directive = store.directives.get(directive_id)
    if directive.status is not DirectiveStatus.PENDING:
        raise TaskError(
            f"directive {directive_id} is already {directive.status}; cannot apply it",
            fix="only PENDING directives can be applied or rejected",
        )
    prepared = check_tasks(store, config, directive.tasks)
    return store.directives.apply(directive_id, [p.spec for p in prepared], actor=actor)


def _queued(store: Store, task_id: str) -> bool:
    try:
        store.tasks.get(task_id)
    except NoSuchTaskError:
        return False
    return True


def _store_one(
    store: Store,
    config: Config,
    item: Any,
    index: int,
    answer: Answer,
    *,
    actor: str,
    auto_apply: bool,
) -> tuple[Directive, list[Task]]:
    raw = json.dumps(item, indent=2, ensure_ascii=False)
    title = item.get("title") if isinstance(item, dict) else None
    title = title.strip() if isinstance(title, str) and title.strip() else f"directive #{index + 1}"
    rationale = item.get("rationale") if isinstance(item, dict) else None
    rationale = rationale if isinstance(rationale, str) else ""

    def rejected(
        reason: str, proposed: Sequence[ProposedTask] = ()
    ) -> tuple[Directive, list[Task]]:
        return store.directives.add(
            title,
            rationale,
            proposed,
            model=answer.model,
            usage=answer.usage,
            status=DirectiveStatus.REJECTED,
            reason=reason,
            raw_answer=raw,
            actor=actor,
        )

    try:
        parsed = _DirectiveAnswer.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "directive"
        return rejected(f"{where}: {error['msg']}")
    proposed = tuple(
        ProposedTask(
            name=task.name,
            title=task.title,
            instruction=task.instruction,
            agent=task.agent,
            depends_on=tuple(task.depends_on),
            labels=tuple(task.labels),
            priority=task.priority or 0,
        )
        for task in parsed.tasks
    )
    try:
        prepared = check_tasks(store, config, proposed)
        specs = [p.spec for p in prepared] if auto_apply else None
        return store.directives.add(
            parsed.title,
            parsed.rationale,
            proposed,
            model=answer.model,
            usage=answer.usage,
            apply=specs,
            actor=actor,
        )
    except CapatazError as exc:
        if isinstance(exc, StoreUnavailable):  # the database is away: not the plan's fault
            raise
        return rejected(str(exc), proposed)


def _unreadable(store: Store, answer: Answer, problem: str, actor: str) -> NoReturn:
    directive, _ = store.directives.add(
        UNREADABLE,
        "",
        (),
        model=answer.model,
        usage=answer.usage,
        status=DirectiveStatus.REJECTED,
        reason=f"the answer is {problem}",
        raw_answer=answer.text,
        actor=actor,
    )
    raise PlannerAnswerError(
        f"the planner's answer is not the JSON asked for ({problem}); kept as directive "
        f"{directive.id} (REJECTED)",
        fix=f"`capataz directive show {directive.id}` shows it; run again, or choose a "
        "[planner] model that supports structured output",
    )
