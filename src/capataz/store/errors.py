"""Errors of the store, all CapatazError subclasses so the CLI prints them as one line
with the fix."""

from __future__ import annotations

from capataz.errors import CapatazError, TaskError, Unavailable

__all__ = [
    "ArgumentRefusedError",
    "ClaimConflictError",
    "DatabaseUrlError",
    "DependencyCycleError",
    "NoSuchDirectiveError",
    "NoSuchRunError",
    "NoSuchRunnerError",
    "NoSuchTaskError",
    "NotFoundError",
    "SchemaTooNewError",
    "StoreError",
    "StoreUnavailable",
    "TaskExistsError",
    "UnknownDependencyError",
    "ValueRefusedError",
]


class StoreError(CapatazError):
    """The database could not be opened, migrated or used."""


class StoreUnavailable(StoreError, Unavailable):
    """The database server is gone for now: the connection was refused, lost or shut
    down, or SQLite stayed locked past its busy timeout. Transient, so runners retry it
    (and the API answers 503); see ``store/_outage.py`` for exactly what counts."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer capataz (its revision is not among this
    code's): reading or writing it could misread columns this code does not know, so
    the process stops before it touches anything (exit 2); another process of the fleet
    upgraded it, and this machine's capataz must follow."""


class ValueRefusedError(StoreError):
    """A value the database cannot hold (a number beyond its column, a NUL in
    PostgreSQL text): the input is wrong, not the server (the API answers 422)."""


class DatabaseUrlError(StoreError):
    """CAPATAZ_DATABASE_URL (or a URL given in code) is not one capataz can use."""


class UnknownDependencyError(TaskError):
    """A task depends on a task id the store does not know."""


class DependencyCycleError(TaskError):
    """Adding the task would close a cycle of dependencies; nothing in it could ever run."""


class ClaimConflictError(TaskError):
    """The named task cannot be claimed now: another runner holds it, its dependencies
    are not done, it is not due yet, or it already ended (HTTP 409)."""


class NotFoundError(TaskError):
    """The id names nothing the store holds (HTTP 404): a typo, or a record that was
    never added or has been forgotten."""


class NoSuchTaskError(NotFoundError):
    """No task has this id (HTTP 404): a typo or a task that was never added."""


class NoSuchDirectiveError(NotFoundError):
    """No planner directive has this id (HTTP 404)."""


class NoSuchRunError(NotFoundError):
    """No run has this id (HTTP 404)."""


class NoSuchRunnerError(NotFoundError):
    """No runner has this id (HTTP 404): it was never registered, or was forgotten."""


class ArgumentRefusedError(TaskError):
    """An argument that no state of the queue would make right: a negative page, an
    unknown status filter or escalation answer, a state a run cannot end with (HTTP
    422). Refusals that depend on the current state stay plain TaskErrors (409)."""


class TaskExistsError(TaskError):
    """A task with this id is already queued (HTTP 409): ids are chosen once."""
