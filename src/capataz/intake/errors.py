"""The errors of task intake, typed so that each front end answers by type rather than
by guessing from the input: the API maps them to HTTP statuses in one table
(:mod:`capataz.api.errors`), the CLI prints them as one line with their exit code.

The store raises the ones only it can know (an unknown dependency, a cycle, an id
already taken, a task that does not exist), and the PRD document its own
(:class:`~capataz.prd.PrdError`: a PRD that cannot be read or parsed); they are
re-exported here so that a front end imports every refusal of intake from one place."""

from __future__ import annotations

from capataz.errors import CapatazError, UnknownAgentError
from capataz.prd.document import PrdError
from capataz.store.errors import (
    DependencyCycleError,
    NoSuchTaskError,
    TaskExistsError,
    UnknownDependencyError,
)

__all__ = [
    "DependencyCycleError",
    "InvalidTask",
    "NoSuchTaskError",
    "PrdError",
    "TaskExistsError",
    "TaskFileError",
    "UnknownAgentError",
    "UnknownDependencyError",
]


class InvalidTask(CapatazError):
    """A task as given cannot be queued whatever the queue holds: a blank instruction,
    a bad id, a number out of range, an unreadable time (HTTP 422). ``field`` is the
    field at fault, in intake's own spelling (``run_after``), for callers that want it."""

    def __init__(self, message: str, *, field: str, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.field = field


class TaskFileError(InvalidTask):
    """A task file cannot be read, parsed or validated (``capataz task import``)."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, field="file", fix=fix)
