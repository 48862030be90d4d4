from __future__ import annotations

from pathlib import Path

import pytest

from capataz.agents.commands import agent_env, render_command, resolve_agent
from capataz.config import parse_config
from capataz.errors import UnknownAgentError


def test_placeholders_become_single_arguments_and_cannot_inject() -> None:
    config = parse_config(
        '[agents.bot]\ncommand = ["bot", "--task={task_id}", "{instruction}", "-C", "{workspace}"]\n'
    )
    argv = render_command(
        config.agents["bot"],
        instruction='x"; rm -rf ~ {workspace} {task_id}',
        workspace=Path("/ws"),
        task_id="t1",
    )
    assert argv == ["bot", "--task=t1", 'x"; rm -rf ~ {workspace} {task_id}', "-C", "/ws"]


def test_unknown_agent_lists_the_known_ones() -> None:
    config = parse_config('[agents.claude]\ncommand = ["claude"]\n')
    with pytest.raises(UnknownAgentError) as caught:
        resolve_agent(config, "gpt")
    assert "'gpt'" in str(caught.value) and "claude, shell" in str(caught.value)
    assert "[agents.gpt]" in str(caught.value)


def test_env_passthrough_only_forwards_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANTED", "1")
    monkeypatch.setenv("UNWANTED", "2")
    config = parse_config(
        '[agents.a]\ncommand = ["a"]\nenv_passthrough = ["WANTED", "ABSENT"]\nenv = {MODE = "ci"}\n'
    )
    assert agent_env(config.agents["a"]) == {"WANTED": "1", "MODE": "ci"}
