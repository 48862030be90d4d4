"""Agents: named executor profiles and how their command lines are built."""

from capataz.agents.commands import agent_env, render_command, resolve_agent

__all__ = ["agent_env", "render_command", "resolve_agent"]
