"""Who may do what: the one table of roles, shared by every front end that takes a
token (the HTTP API, the MCP server).

It lives beside the tokens (``store.tokens``), which define the roles, so that front
ends of any layer above the store read the same table instead of keeping copies that
drift: a role allowed to read in the API is allowed to read over MCP, and the message
that refuses a call names the same role and the same fix everywhere.
"""

from __future__ import annotations

from enum import StrEnum

from capataz.store._tokens import Role

__all__ = ["ALLOWED", "NEEDS", "Access", "may", "needs_role_fix"]


class Access(StrEnum):
    """What a call does, and so which roles may make it."""

    READ = "read"  # viewer, operator, admin
    OPERATE = "operate"  # operator, admin: tasks and escalations
    RUNNER = "runner"  # runner, admin: claim, heartbeat, report (/runner, remote runners)
    ADMIN = "admin"  # admin only


ALLOWED: dict[Access, frozenset[str]] = {
    Access.READ: frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
    Access.OPERATE: frozenset({Role.OPERATOR, Role.ADMIN}),
    Access.RUNNER: frozenset({Role.RUNNER, Role.ADMIN}),
    Access.ADMIN: frozenset({Role.ADMIN}),
}
# The least role that may do it: what a refusal tells the caller to ask for.
NEEDS: dict[Access, str] = {
    Access.READ: Role.VIEWER.value,
    Access.OPERATE: Role.OPERATOR.value,
    Access.RUNNER: Role.RUNNER.value,
    Access.ADMIN: Role.ADMIN.value,
}


def may(role: str, access: Access) -> bool:
    """Whether a token of ``role`` may make a call of kind ``access``."""
    return role in ALLOWED[access]


def needs_role_fix(access: Access) -> str:
    """The fix sentence of a refusal: how to get a token that may do it."""
    return f"use a token with role {NEEDS[access]}: `capataz token create --role {NEEDS[access]}`"
