"""Agents: named command templates plus their security profile (from capataz.toml).

Placeholders are substituted inside single argv elements in one pass, and the command
is never handed to a shell by capataz, so an instruction like ``"; rm -rf ~`` or one
containing ``{workspace}`` stays one literal argument."""

from __future__ import annotations

import os
import re
from pathlib import Path

from capataz.agents.presets import apply_preset
from capataz.config import AgentConfig, Config
from capataz.errors import UnknownAgentError

__all__ = ["agent_env", "render_command", "resolve_agent"]

_PLACEHOLDER = re.compile(r"\{(instruction|workspace|task_id|context)\}")


def resolve_agent(config: Config, name: str) -> AgentConfig:
    """The agent named ``name``, its preset (if any) applied: what actually runs."""
    try:
        agent = config.agents[name]
    except KeyError:
        known = ", ".join(sorted(config.agents)) or "(none)"
        raise UnknownAgentError(
            f"unknown agent {name!r}; known agents: {known}",
            fix=f"use one of those, or define [agents.{name}] with a command in capataz.toml",
        ) from None
    return apply_preset(agent)


def render_command(
    agent: AgentConfig, *, instruction: str, workspace: Path, task_id: str, context: str = "{}"
) -> list[str]:
    """``{context}`` is the JSON the task's dependencies published (``{}`` if none)."""
    values = {
        "instruction": instruction,
        "workspace": str(workspace),
        "task_id": task_id,
        "context": context,
    }
    command = agent.command or []  # resolve_agent fills it from the preset
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], part) for part in command]


def agent_env(agent: AgentConfig) -> dict[str, str]:
    """The variables an agent gets beyond the sandbox's clean base environment."""
    env = {name: os.environ[name] for name in agent.env_passthrough if name in os.environ}
    env.update(agent.env)
    return env
