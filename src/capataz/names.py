"""Identifiers capataz accepts from users and agents, checked in one place.

Task ids name directories and git refs; secret names become environment variables. Each
is kept to a small alphabet and matched whole (``fullmatch``: a ``$`` would let a
trailing newline through)."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from capataz.errors import CapatazError, TaskError

__all__ = ["SecretNameError", "check_secret_name", "new_task_id", "validate_task_id"]

_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SecretNameError(CapatazError):
    """A secret name that cannot be an environment variable's."""


def validate_task_id(task_id: str) -> str:
    """Task ids name directories and git refs, so they are kept to a safe alphabet."""
    if not _TASK_ID.fullmatch(task_id):
        raise TaskError(
            f"invalid task id {task_id!r}",
            fix="use 1-64 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return task_id


def new_task_id(now: datetime) -> str:
    """A fresh task id: sortable by creation time (people and ``task list`` read them
    in order) and random enough that two processes adding at once never clash."""
    return f"t-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def check_secret_name(name: str) -> str:
    """Secrets become environment variables: their names must be valid ones."""
    if not _NAME.fullmatch(name):
        raise SecretNameError(
            f"{name!r} is not a secret name",
            fix="use letters, digits and underscores, not starting with a digit "
            "(e.g. OPENAI_API_KEY)",
        )
    return name
