"""Durable storage of capataz: one schema on SQLite or PostgreSQL, migrated by Alembic,
written only through :class:`Store`."""

from capataz.store.engine import create_engine_for, database_url
from capataz.store.errors import (
    DatabaseUrlError,
    DependencyCycleError,
    NoSuchTaskError,
    StoreError,
    TaskExistsError,
    UnknownDependencyError,
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
from capataz.store.statuses import RunStatus, TaskState

__all__ = [
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
    "RunStatus",
    "RunnerInfo",
    "StepInfo",
    "Store",
    "StoreError",
    "Task",
    "TaskExistsError",
    "TaskState",
    "TokenInfo",
    "UnknownDependencyError",
    "create_engine_for",
    "database_url",
    "task_json",
    "upgrade",
]
