"""Durable storage of capataz: one schema on SQLite or PostgreSQL, migrated by Alembic,
written only through :class:`Store` and its facades (``store.tasks``, ``store.leases``,
``store.runners``, ``store.runs``, ... : see :mod:`capataz.store.manager`)."""

from capataz.store.engine import create_engine_for, database_url
from capataz.store.errors import (
    DatabaseUrlError,
    DependencyCycleError,
    NoSuchTaskError,
    StoreError,
    StoreUnavailable,
    TaskExistsError,
    UnknownDependencyError,
    ValueRefusedError,
)
from capataz.store.manager import Store
from capataz.store.migrate import upgrade
from capataz.store.records import (
    ClaimedTask,
    EscalationAnswer,
    NewTask,
    RunDetail,
    RunDetails,
    RunInfo,
    RunnerInfo,
    RunRecord,
    StepInfo,
    Task,
    TokenInfo,
    task_json,
)
from capataz.store.statuses import RUN_FILTERS, RunState, RunStatus, TaskState

__all__ = [
    "RUN_FILTERS",
    "ClaimedTask",
    "DatabaseUrlError",
    "DependencyCycleError",
    "EscalationAnswer",
    "NewTask",
    "NoSuchTaskError",
    "RunDetail",
    "RunDetails",
    "RunInfo",
    "RunRecord",
    "RunState",
    "RunStatus",
    "RunnerInfo",
    "StepInfo",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Task",
    "TaskExistsError",
    "TaskState",
    "TokenInfo",
    "UnknownDependencyError",
    "ValueRefusedError",
    "create_engine_for",
    "database_url",
    "task_json",
    "upgrade",
]
