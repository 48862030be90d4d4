"""A PRD as git holds it: which criterion a task stands for, the PRD at a commit, and
a criterion ticked on a branch as a commit of capataz's own.

A PRD task is known by its idempotency key, ``prd:<path in the repository>#ACn``
(:mod:`capataz.intake.prd_plan` makes it): the key travels with the claimed task to
any runner, local or remote, and :func:`criterion_of` reads the path and the criterion
back from it, so no column or wire field repeats what the key already says.

Every read goes through git (:mod:`capataz.workspace.landing`), never through a
checkout: the target branch's tip for ticking, a run's base commit for judging it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from capataz.prd.document import Prd, PrdError, parse_prd, tick
from capataz.workspace.landing import FileCommit, commit_file, read_at
from capataz.workspace.repo import Repository

__all__ = ["KEY_PREFIX", "CriterionRef", "criterion_of", "prd_at", "tick_on_branch"]

KEY_PREFIX = "prd:"
_KEY = re.compile(r"^prd:(?P<path>[^#]+)#(?P<ac>AC[1-9]\d*)$")


@dataclass(frozen=True)
class CriterionRef:
    """One acceptance criterion of one PRD: ``path`` relative to the repository (with
    ``/``), ``ac_id`` as the parser spells it (``AC1``)."""

    path: str
    ac_id: str

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.path}#{self.ac_id}"


def criterion_of(key: str | None) -> CriterionRef | None:
    """The criterion a task's idempotency key stands for; None for any other key (a
    task that is not a PRD's, or a path that could leave the repository)."""
    if key is None:
        return None
    match = _KEY.match(key)
    if match is None:
        return None
    path = PurePosixPath(match["path"])
    if path.is_absolute() or ".." in path.parts or str(path) != match["path"]:
        return None
    return CriterionRef(match["path"], match["ac"])


def prd_at(repo: Repository, commit: str, path: str) -> Prd:
    """The PRD ``path`` as committed in ``commit``; a :class:`PrdError` when the commit
    has no such file or it does not parse."""
    text = read_at(repo, commit, path)
    if text is None:
        raise PrdError(
            f"{path}: not in commit {commit[:12]} (or not UTF-8)",
            fix="commit the PRD on the target branch; capataz reads it from there",
        )
    return parse_prd(text, path=Path(path))


def tick_on_branch(
    repo: Repository, branch: str, path: str, ac_ids: Sequence[str], message: str
) -> FileCommit | None:
    """Tick the checklists of ``ac_ids`` in ``path`` as the tip of ``branch`` holds it
    (read under the landing lock, so a result landing meanwhile is never undone), as one
    commit by capataz with ``message``. None when they are ticked already; a
    :class:`PrdError` when the branch has no such PRD, it does not parse, or it lacks
    one of the criteria; ``refused`` when the branch's checkout is not clean."""

    def ticked(text: str | None) -> str:
        if text is None:
            raise PrdError(
                f"{path}: not on branch {branch} (or not UTF-8)",
                fix=f"commit the PRD on {branch} first; capataz ticks it there",
            )
        known = {ac.id for ac in parse_prd(text, path=Path(path)).criteria}
        missing = [ac_id for ac_id in ac_ids if ac_id not in known]
        if missing:
            raise PrdError(
                f"{path}: has no {', '.join(missing)} on branch {branch}",
                fix="check the criterion's id in the PRD; its task names it in its key",
            )
        return tick(text, ac_ids, path=Path(path))

    return commit_file(repo, branch, path, ticked, message)
