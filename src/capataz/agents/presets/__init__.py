"""The agent CLIs capataz knows, by the short name used in ``preset = "..."``."""

from __future__ import annotations

from capataz.agents.preset import Preset
from capataz.agents.presets.aider import AiderPreset
from capataz.agents.presets.claude_code import ClaudeCode
from capataz.agents.presets.codex import CodexPreset
from capataz.config import AgentConfig, Config
from capataz.errors import UnknownAgentError

__all__ = ["PRESETS", "apply_preset", "preset_named", "with_presets"]

PRESETS: dict[str, type[Preset]] = {
    preset.name: preset for preset in (AiderPreset, ClaudeCode, CodexPreset)
}


def preset_named(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        known = ", ".join(sorted(PRESETS)) or "(none)"
        raise UnknownAgentError(
            f"unknown agent preset {name!r}; known presets: {known}",
            fix="use one of those, or give the agent its own command",
        ) from None


def apply_preset(agent: AgentConfig) -> AgentConfig:
    """``agent`` with every key the user left unset filled in by its preset.

    Keys the user set win; ``env`` is merged variable by variable and ``ignore`` adds to
    the preset's own state files, since both are lists the user extends, not replaces."""
    if agent.preset is None:
        return agent
    preset = preset_named(agent.preset)
    endpoint = agent.endpoint or preset.default_endpoint
    settings = preset.settings(model=agent.model, endpoint=endpoint)
    mine = agent.model_fields_set
    update: dict[str, object] = {
        "endpoint": endpoint,
        "env": {**settings.env, **agent.env},
        "ignore": list(dict.fromkeys([*settings.ignore, *agent.ignore])),  # idempotent
    }
    defaults = {
        "command": settings.command,
        "secrets": settings.secrets,
        "memory": settings.memory,
        "network": settings.network,
    }
    update.update({key: value for key, value in defaults.items() if key not in mine})
    return agent.model_copy(update=update)


def with_presets(config: Config) -> Config:
    """``config`` with every agent's preset applied: for code that reads the agents
    table itself rather than through resolve_agent (which secrets an agent needs, and
    so which credential requests a task waits for). Applying a preset twice is a
    no-op, so a resolved agent may be resolved again."""
    agents = {name: apply_preset(agent) for name, agent in config.agents.items()}
    return config.model_copy(update={"agents": agents})
