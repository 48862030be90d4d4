from __future__ import annotations

from pathlib import Path

import pytest

from capataz.config import load_config, parse_config
from capataz.errors import ConfigError
from capataz.models import Severity, ViolationType
from capataz.setup.initialize import config_template


def test_missing_file_means_defaults_with_the_builtin_shell_agent(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.project.target_branch == "main"
    assert config.agents["shell"].command == ["bash", "-c", "{instruction}"]


def test_init_template_is_valid_and_readable() -> None:
    config = parse_config(config_template("trunk"))
    assert config.project.target_branch == "trunk"
    assert config.agents["shell"].memory == 2 * 1024**3
    assert config.agents["shell"].idle_timeout == 120
    assert "**/*.pem" in config.policy.forbidden_paths


def test_sizes_and_durations_are_parsed() -> None:
    config = parse_config(
        '[agents.x]\ncommand = ["run"]\ntimeout = "1h"\nmemory = "512MiB"\n'
        'idle_timeout = "90s"\ncpu = 30\n'
    )
    agent = config.agents["x"]
    assert (agent.timeout, agent.memory, agent.idle_timeout, agent.cpu) == (
        3600,
        512 * 1024**2,
        90,
        30,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[agents.shell]\ncommand = ["bash"]\ntimeout = "ten minutes"\n',
            "capataz.toml:3: agents.shell.timeout: 'ten minutes' is not a duration",
        ),
        ('[project]\ntarget = "main"\n', "capataz.toml:2: unknown key 'project.target'"),
        ('[agents.bot]\ntimeout = "1m"\n', "capataz.toml:1: agents.bot: an agent needs a command"),
        (
            '[[gates]]\nname = "t"\nrun = "x"\n\n[[gates]]\nname = "u"\nrun = "y"\nseverity = "huge"\n',
            "capataz.toml:8: gates.1.severity",
        ),
        ('[policy]\nforbidden_tokens = ["(unclosed"]\n', "capataz.toml:2: policy.forbidden_tokens"),
        ('[project]\nland = "yolo"\n', "capataz.toml:2: project.land"),
        ('[project]\nsandbox = "docker"\n', "capataz.toml:2: project.sandbox"),
        (
            '[agents.a]\ncommand = ["x"]\nnetwork = ["https://api.example.com"]\n',
            "capataz.toml:3: agents.a.network: 'https://api.example.com' is a URL",
        ),
        (
            '[agents.a]\ncommand = ["x"]\nnetwork = "api.example.com"\n',
            "agents.a.network: write a list of host[:port] patterns",
        ),
        (
            '[[gates]]\nname = "t"\nrun = "x"\nnetwork = ["*"]\n',
            "capataz.toml:4: gates.0.network: '*' would allow every host",
        ),
        (
            '[project]\nsandbox = "none"\n[agents.a]\ncommand = ["x"]\nnetwork = ["a.example"]\n',
            'capataz.toml:5: agents.a.network: [agents.a] lists hosts, which sandbox = "none" cannot',
        ),
        ('[project\ntarget_branch = "main"\n', "capataz.toml:1: not valid TOML"),
        (
            '[[gates]]\nname = "t"\nrun = "x"\n[[gates]]\nname = "t"\nrun = "y"\n',
            "two gates are named 't'",
        ),
        ('[policy.severity]\nFORBIDDEN_PATH = "fatal"\n', "policy.severity.FORBIDDEN_PATH"),
        (
            '[project]\n\n[prd]\nout_of_scope = "severe"\n',
            "capataz.toml:4: prd.out_of_scope: 'severe' is not a severity; write one of 'low', "
            "'medium', 'high', 'critical', 'off'",
        ),
        ("[prd]\nout_of_scope = false\n", "prd.out_of_scope: False is not a severity"),
    ],
)
def test_bad_config_is_one_line_naming_line_key_and_fix(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert " — " in message  # the fix follows the problem


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "capataz.toml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


def test_policy_severity_overrides() -> None:
    config = parse_config('[policy.severity]\nFORBIDDEN_TOKEN = "critical"\n')
    assert config.policy.severity_of(ViolationType.FORBIDDEN_TOKEN) is Severity.CRITICAL
    assert config.policy.severity_of(ViolationType.TOO_MANY_FILES) is Severity.MEDIUM


@pytest.mark.parametrize(
    "text", ['[sandbox]\nbwrap = "tools/bwrap"\n', '[sandbox]\nexpose = ["relative/dir"]\n']
)
def test_sandbox_paths_must_be_absolute(text: str) -> None:
    with pytest.raises(ConfigError, match=r"must be absolute|absolute path"):
        parse_config(text)


def test_network_is_a_bool_or_an_allowlist() -> None:
    config = parse_config(
        '[agents.a]\ncommand = ["x"]\nnetwork = ["api.example.com", "127.0.0.1:8787"]\n'
        '[agents.b]\ncommand = ["x"]\nnetwork = true\n'
        '[[gates]]\nname = "t"\nrun = "x"\nnetwork = ["*.example.com:8443"]\n'
    )
    assert config.agents["a"].network == ["api.example.com", "127.0.0.1:8787"]
    assert config.agents["b"].network is True
    assert config.agents["shell"].network is False
    assert config.gates[0].network == ["*.example.com:8443"]
    assert config.policy.severity_of(ViolationType.NETWORK_DENIED) is Severity.MEDIUM


def test_the_out_of_scope_check_is_medium_by_default_and_can_be_off() -> None:
    assert parse_config("").prd.out_of_scope_severity is Severity.MEDIUM
    assert parse_config('[prd]\nout_of_scope = "critical"\n').prd.out_of_scope_severity is (
        Severity.CRITICAL
    )
    assert parse_config('[prd]\nout_of_scope = "off"\n').prd.out_of_scope_severity is None
