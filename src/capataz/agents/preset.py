"""What a preset knows about one agent CLI (Claude Code, Codex, aider).

A user who writes ``preset = "claude-code"`` should get a working, unattended agent
with no other key: the preset supplies the command line, the environment, the memory
the runtime needs, the credential and the network endpoint. It also reads the agent's
own output while it runs, because these CLIs report failures (a 401, no network, a
refused tool call) in their event stream and still exit 0: the reader turns those into
a failure within seconds, tells retry chatter from progress (so chatter does not keep
the idle watchdog quiet), and adds up the usage the agent reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

__all__ = [
    "AgentFailure",
    "AgentUsage",
    "OutputReader",
    "Preset",
    "PresetSettings",
    "endpoint_address",
]


@dataclass
class AgentUsage:
    """What one run of the agent consumed, as the agent itself reported it."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None  # only when the agent reports a cost
    model: str | None = None
    turns: int = 0


@dataclass(frozen=True)
class AgentFailure:
    """Why the agent failed, in its own words, and what the user should change.

    A reader does not know the agent's name or endpoint, so both texts may name
    ``{agent}`` and ``{endpoint}``: the pipeline replaces them with the agent's name and
    its endpoint's ``host:port`` (``[agents.{agent}] network = ["{endpoint}"]``)."""

    reason: str  # e.g. "401 from the model: invalid x-api-key"
    fix: str  # e.g. "store the key: capataz secret set ANTHROPIC_API_KEY"


class OutputReader(ABC):
    """Reads one run's output lines, in order, as they arrive."""

    def __init__(self) -> None:
        self.usage = AgentUsage()
        self.failure: AgentFailure | None = None

    @abstractmethod
    def feed(self, stream: str, text: str) -> bool:
        """Take one line (``stream`` is "out" or "err"). Returns False for chatter
        (retry notices, reconnect lines) that must not count as progress; sets
        :attr:`failure` as soon as the run is known to have failed."""

    def finish(self, exit_code: int | None) -> None:
        """Called once the agent has exited: a last chance to classify a failure the
        stream only implied (e.g. a run that ended with no result event)."""
        return


@dataclass(frozen=True)
class PresetSettings:
    """AgentConfig keys a preset fills in (only those the user left unset)."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    memory: int | None = None  # None: "unlimited" (a runtime that reserves address space)
    # host:port patterns. Until the allowlist lands, AgentConfig.network is a bool and a
    # non-empty list here means the host's network (network = true).
    network: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)  # the agent's own state files


class Preset(ABC):
    """One agent CLI. Subclasses live in capataz.agents.presets, one module each."""

    name: ClassVar[str]  # the value of ``preset =``
    executable: ClassVar[str]  # what `capataz init` looks for on PATH
    credential: ClassVar[str]  # the vault secret it needs, e.g. ANTHROPIC_API_KEY
    default_endpoint: ClassVar[str]  # the model API's base URL
    description: ClassVar[str]

    @abstractmethod
    def settings(self, *, model: str | None, endpoint: str) -> PresetSettings:
        """The agent's configuration for this model and endpoint."""

    @abstractmethod
    def reader(self) -> OutputReader:
        """A fresh reader for one run's output."""


def endpoint_address(endpoint: str) -> str:
    """``host:port`` of a base URL, the network allowlist entry its agent needs."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
