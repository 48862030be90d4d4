"""Credential requests in capataz.toml: validated once, with the line; statuses and
blockers computed from the configuration and the vault's names."""

from __future__ import annotations

import pytest

from capataz.config import parse_config
from capataz.errors import ConfigError
from capataz.secrets.credentials import Blocker, blocking_requests, needed_secrets, request_states

CONFIG = """
[agents.gpt]
command = ["x"]
secrets = ["OPENAI_API_KEY", "EXTRA_TOKEN"]
secrets_as = "files"

[[gates]]
name = "lint"
run = "true"
secrets = ["LINT_TOKEN"]

[[requests]]
id = "REQ-009"
secret = "OPENAI_API_KEY"
description = "OpenAI"
agents = ["gpt"]
"""


def test_requests_agents_and_gates_parse() -> None:
    config = parse_config(CONFIG)
    assert config.agents["gpt"].secrets_as == "files"
    assert config.agents["shell"].secrets == [] and config.agents["shell"].secrets_as == "env"
    assert config.gates[0].secrets == ["LINT_TOKEN"]
    assert needed_secrets(config, "gpt") == ["OPENAI_API_KEY", "EXTRA_TOKEN", "LINT_TOKEN"]
    assert needed_secrets(config, "shell") == ["LINT_TOKEN"]
    (waiting,) = request_states(config, set())
    assert (waiting.id, waiting.status.value, waiting.agents) == ("REQ-009", "WAITING", ("gpt",))
    (provided,) = request_states(config, {"OPENAI_API_KEY"})
    assert provided.status.value == "PROVIDED"


def test_blockers_name_the_request_or_the_bare_secret() -> None:
    config = parse_config(CONFIG)
    blockers = blocking_requests(config, "gpt", {"LINT_TOKEN"})
    assert blockers == [Blocker("OPENAI_API_KEY", "REQ-009"), Blocker("EXTRA_TOKEN", None)]
    assert str(blockers[0]) == (
        "waiting for credential request REQ-009 (OPENAI_API_KEY): provide it with "
        "`capataz secret set OPENAI_API_KEY` or the panel's Setup"
    )
    assert "no credential request declares it" in str(blockers[1])
    assert blocking_requests(config, "gpt", {"OPENAI_API_KEY", "EXTRA_TOKEN", "LINT_TOKEN"}) == []


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (
            '[agents.bad]\ncommand = ["x"]\nsecrets = ["1-BAD"]\n',
            (":20: agents.bad.secrets", "not a secret name"),
        ),
        ('[[requests]]\nid = "REQ-1"\nsecret = "A-B"\n', (":20: requests.1.secret",)),
        (
            '[[requests]]\nid = "REQ-1"\nsecret = "A"\nagents = ["nope"]\n',
            (":21: requests.1.agents", "unknown agent 'nope'"),
        ),
        (
            '[[requests]]\nid = "REQ-1"\nsecret = "OTHER"\nagents = ["gpt"]\n',
            (":21: requests.1.agents", "add it to [agents.gpt] secrets"),
        ),
        ('[[requests]]\nid = "REQ-009"\nsecret = "B"\n', (":19: requests.1.id", "two requests")),
        ('[agents.x]\ncommand = ["x"]\nsecrets_as = "disk"\n', (":20: agents.x.secrets_as",)),
    ],
)
def test_bad_requests_name_the_line_and_key(extra: str, needles: tuple[str, ...]) -> None:
    text = CONFIG + "\n" + extra
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    for needle in needles:
        assert needle in str(raised.value), str(raised.value)
