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

from capataz.units import Budget, format_budget_tokens

__all__ = [
    "AgentFailure",
    "AgentUsage",
    "BudgetExcess",
    "OutputReader",
    "Preset",
    "PresetSettings",
    "endpoint_address",
    "over_budget",
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
class BudgetExcess:
    """A run that used more than its budget: the figure, the limit, and how to raise it
    (``{agent}`` is filled in by the pipeline, as in :class:`AgentFailure`)."""

    details: str  # e.g. "the agent used 1,234 tokens (1,000 in, 234 out); its budget is 1,000"
    suggestion: str


def over_budget(usage: AgentUsage, budget: Budget | None) -> BudgetExcess | None:
    """Whether ``usage`` has gone past ``budget``: tokens in plus out above the token
    budget, or a reported cost above the dollar budget (an agent that reports no cost
    is held to its tokens only). None while within it."""
    if budget is None:
        return None
    used = usage.tokens_in + usage.tokens_out
    if budget.tokens is not None and used > budget.tokens:
        raised = format_budget_tokens(max(budget.tokens * 2, used + 1))
        return BudgetExcess(
            details=(
                f"the agent used {used:,} tokens ({usage.tokens_in:,} in, "
                f"{usage.tokens_out:,} out); its budget is {budget.tokens:,} tokens"
            ),
            suggestion=(
                f"raise it for this task (--budget {raised}, or budget: {raised} in "
                "plan.yaml) or for the agent ([agents.{agent}] budget = {tokens = "
                f"{max(budget.tokens * 2, used + 1)}}}), or split the task"
            ),
        )
    cost = usage.cost_usd
    if budget.usd is not None and cost is not None and cost > budget.usd:
        raised_usd = f"{max(budget.usd * 2, cost * 1.5):.2f}"
        return BudgetExcess(
            details=f"the agent spent ${cost:.4f}; its budget is ${budget.usd:.2f}",
            suggestion=(
                f"raise it for this task (--budget {raised_usd}usd, or budget: "
                f"{raised_usd}usd in plan.yaml) or for the agent ([agents.{{agent}}] "
                f"budget = {{usd = {raised_usd}}}), or split the task"
            ),
        )
    return None


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
