"""From a parsed PRD to tasks, and back: one task per acceptance criterion through the
one intake (:func:`capataz.intake.tasks.prepare`, then ``submit``), and the status of
each criterion from the queue.

A criterion's task is found again by its idempotency key, ``prd:<path in the
repository>#<AC id>``, not by a column or a label: the key already makes re-importing
the same PRD add nothing, and the same key is what ``prd status`` looks up. The path is
relative to the repository so that every clone (and every runner) speaks of one PRD
alike. Task ids are left to the intake (generated, like every other task's): readable
ids derived from the title would collide between two PRDs with the same title.

The instruction is composed from the whole PRD, not only the criterion, because the
agent sees nothing else: the objectives say why, the technical notes say how, and the
out-of-scope list says what not to touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from capataz.config import Config
from capataz.intake.errors import PrdError
from capataz.intake.tasks import PreparedTask, TaskRequest, prepare
from capataz.prd import AcceptanceCriterion, Prd
from capataz.prd.branch import KEY_PREFIX
from capataz.store import Store, Task, TaskState

__all__ = [
    "PRD_LABEL",
    "CriterionStatus",
    "instruction",
    "key_prefix",
    "prd_status",
    "prepare_prd",
    "task_title",
    "to_tick",
]

PRD_LABEL = "prd"


@dataclass(frozen=True)
class CriterionStatus:
    """A criterion of the file beside the task queued for it (None: not imported)."""

    criterion: AcceptanceCriterion
    key: str
    task: Task | None


def key_prefix(repo_root: Path, path: Path) -> str:
    """``prd:<path relative to the repository>#``; the criterion's id completes it.
    A PRD outside the repository has no such path, and its tasks could not tick it."""
    resolved = path.resolve()
    try:
        relative = resolved.relative_to(repo_root.resolve())
    except ValueError:
        raise PrdError(
            f"{path}: is outside the repository {repo_root}",
            fix="keep the PRD in the repository (e.g. docs/prd/) and import it from there",
        ) from None
    return f"{KEY_PREFIX}{relative.as_posix()}#"


def task_title(prd: Prd, ac: AcceptanceCriterion) -> str:
    return f"{prd.title}: {ac.id} {ac.title}"


def instruction(prd: Prd, ac: AcceptanceCriterion, source: str) -> str:
    """What the agent is told to do for ``ac``: the criterion first, then the PRD's
    context. ``source`` is the PRD's path in the repository, should it want to read
    more."""
    parts = [
        f"Implement acceptance criterion {ac.id} of the PRD {prd.title!r} ({source}).",
        f"## {ac.id}: {ac.title}",
    ]
    if ac.notes:
        parts.append("\n".join(ac.notes))
    if ac.items:
        lines = [f"- [{'x' if item.checked else ' '}] {item.text}" for item in ac.items]
        parts.append("Done when every item of this checklist holds:\n" + "\n".join(lines))
    sections = (
        ("Objectives of the PRD", prd.objectives),
        ("Technical notes", prd.technical_notes),
        ("Out of scope (do not do)", prd.out_of_scope),
    )
    for heading, entries in sections:
        if entries:
            parts.append(f"## {heading}\n" + "\n".join(f"- {entry}" for entry in entries))
    return "\n\n".join(parts) + "\n"


def prepare_prd(
    prd: Prd,
    config: Config,
    *,
    prefix: str,
    agent: str | None = None,
    now: datetime | None = None,
    new_id: Callable[[], str] | None = None,
) -> list[PreparedTask]:
    """One prepared task per criterion, in the PRD's order, named by the criterion's id
    so that dependencies between criteria become dependencies between their tasks."""
    source = prefix.removeprefix("prd:").removesuffix("#")
    requests = [
        TaskRequest(
            instruction=instruction(prd, ac, source),
            title=task_title(prd, ac),
            agent=agent,
            name=ac.id,
            depends_on=ac.depends_on,
            labels=(PRD_LABEL,),
            idempotency_key=prefix + ac.id,
        )
        for ac in prd.criteria
    ]
    ids = [ac.id for ac in prd.criteria]

    def names(index: int, field: str) -> str:
        # "AC2: unknown agent 'x'": the agent's message names the field itself.
        where = f"{prd.path}: {ids[index]}"
        return where if field == "agent" else f"{where}: {field}"

    return prepare(requests, config, names=names, now=now, new_id=new_id, batch=True)


def prd_status(store: Store, prd: Prd, prefix: str) -> list[CriterionStatus]:
    """Each criterion of the file with the task its key stands for, in the file's
    order. Tasks of criteria since removed from the file are not shown: the file is
    what the person asks about."""
    by_key = {task.idempotency_key: task for task in store.tasks.with_key_prefix(prefix)}
    return [CriterionStatus(ac, prefix + ac.id, by_key.get(prefix + ac.id)) for ac in prd.criteria]


def to_tick(rows: list[CriterionStatus]) -> list[str]:
    """The criteria whose task is done but whose checklist the file does not tick
    fully yet: what ``capataz prd tick`` checks off (a run that lands ticks its own
    criterion; this catches up on those it could not)."""
    return [
        row.criterion.id
        for row in rows
        if row.task is not None
        and row.task.status is TaskState.DONE
        and row.criterion.checked < len(row.criterion.items)
    ]
