"""Credential requests: the secrets a project declared it needs (``[[requests]]`` in
capataz.toml, e.g. ``REQ-009 OPENAI_API_KEY``) and whether the vault has them yet.

A request is WAITING until its secret is in the vault, then PROVIDED: the status is
computed from the configuration and the vault's names every time, never stored, so it
cannot disagree with the vault. A task whose agent (or one of whose gates) needs a
secret the vault lacks is not started; :func:`blocking_requests` says what it waits
for, in words that tell the operator how to unblock it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from capataz.config import Config
from capataz.errors import CapatazError

__all__ = [
    "Blocker",
    "CredentialsWaitingError",
    "RequestState",
    "RequestStatus",
    "agents_allowed",
    "blocking_requests",
    "needed_secrets",
    "request_states",
    "requests_for",
]


class RequestStatus(StrEnum):
    WAITING = "WAITING"
    PROVIDED = "PROVIDED"


@dataclass(frozen=True)
class RequestState:
    """One request as `capataz request list` and ``GET /ops/requests`` show it."""

    id: str
    secret: str
    description: str
    agents: tuple[str, ...]
    status: RequestStatus

    def as_json(self) -> dict[str, Any]:
        """The runbook's shape (docs/runbook.md); ``name`` repeats ``secret`` for the panel."""
        return {
            "id": self.id,
            "secret": self.secret,
            "name": self.secret,
            "description": self.description,
            "status": self.status.value,
            "agents": list(self.agents),
        }


@dataclass(frozen=True)
class Blocker:
    """A secret a task needs that the vault does not have (and the request, if any)."""

    secret: str
    request: str | None

    def __str__(self) -> str:
        how = f"provide it with `capataz secret set {self.secret}` or the panel's Setup"
        if self.request is None:
            return f"waiting for secret {self.secret} (no credential request declares it): {how}"
        return f"waiting for credential request {self.request} ({self.secret}): {how}"


class CredentialsWaitingError(CapatazError):
    """A task cannot start yet: a secret its agent or gates need is not in the vault.
    Not a failure of the task: a runner gives it back to wait, ``capataz exec``
    refuses with this line."""

    def __init__(self, blockers: list[Blocker]) -> None:
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        super().__init__(f"{blockers[0]}{more}")
        self.blockers = blockers


def agents_allowed(config: Config, secret: str) -> list[str]:
    """The agents that may see ``secret`` (those listing it), by name."""
    return sorted(name for name, agent in config.agents.items() if secret in agent.secrets)


def requests_for(config: Config, secret: str) -> list[str]:
    """The ids of the requests declaring ``secret``."""
    return [request.id for request in config.requests if request.secret == secret]


def request_states(config: Config, provided: Collection[str]) -> list[RequestState]:
    """Every declared request with its status; ``provided`` is the vault's names.
    A request that names no agents shows the agents allowed to see its secret."""
    return [
        RequestState(
            id=request.id,
            secret=request.secret,
            description=request.description,
            agents=tuple(request.agents or agents_allowed(config, request.secret)),
            status=RequestStatus.PROVIDED if request.secret in provided else RequestStatus.WAITING,
        )
        for request in config.requests
    ]


def needed_secrets(config: Config, agent: str) -> list[str]:
    """What a task run by ``agent`` needs from the vault: the agent's secrets and those
    of the command gates (every task runs them), in order, without repeats."""
    names: list[str] = []
    chosen = config.agents.get(agent)
    for name in [*(chosen.secrets if chosen else []), *_gate_secrets(config)]:
        if name not in names:
            names.append(name)
    return names


def _gate_secrets(config: Config) -> Iterable[str]:
    for gate in config.gates:
        yield from gate.secrets


def blocking_requests(config: Config, agent: str, provided: Collection[str]) -> list[Blocker]:
    """Why a task run by ``agent`` cannot start now (empty: it can). A missing secret is
    named by the request declaring it, preferring one that names this agent."""
    blockers = []
    for secret in needed_secrets(config, agent):
        if secret in provided:
            continue
        declaring = [r for r in config.requests if r.secret == secret]
        declaring.sort(key=lambda r: agent not in r.agents)
        blockers.append(Blocker(secret, declaring[0].id if declaring else None))
    return blockers
