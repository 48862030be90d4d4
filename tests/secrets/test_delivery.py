"""Secrets reach exactly the sandboxes allowed to see them: real pipeline, real bwrap.

Agents write what they saw into files that land on main, so each test reads the
sandbox's view from git; gates prove theirs by passing or failing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git

from capataz.config import parse_config
from capataz.models import Outcome, ViolationType
from capataz.pipeline.supervisor import RunSpec, Supervisor
from capataz.secrets.credentials import CredentialsWaitingError
from capataz.secrets.vault import KEY_ENV, MasterKey, Vault
from capataz.store import Store
from capataz.workspace.repo import Repository

VALUE = "sk-test-1b9e-delivered-value"
GATE_VALUE = "gate-token-55aa"
CONFIG = """
[project]
sandbox = "{sandbox}"

[agents.gpt]
command = ["bash", "-c", "{{instruction}}"]
secrets = ["OPENAI_API_KEY"]
secrets_as = "{mode}"

[agents.plain]
command = ["bash", "-c", "{{instruction}}"]

[[gates]]
name = "sees-nothing"
phase = "post"
run = 'test -z "$OPENAI_API_KEY$GATE_TOKEN" && ! env | grep -q "{value}"'

[[gates]]
name = "sees-its-own"
phase = "pre"
run = 'test "$GATE_TOKEN" = "{gate_value}" && test -z "$OPENAI_API_KEY"'
secrets = ["GATE_TOKEN"]

[[requests]]
id = "REQ-009"
secret = "OPENAI_API_KEY"
agents = ["gpt"]
"""


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def _project(
    make_repo: Callable[..., Path], *, mode: str = "env", sandbox: str = "bwrap", store: bool = True
) -> tuple[Repository, Supervisor]:
    text = CONFIG.format(sandbox=sandbox, mode=mode, value=VALUE, gate_value=GATE_VALUE)
    root = make_repo(config=text)
    root.chmod(0o755)
    root.parent.chmod(0o755)
    if store:
        _store_secrets(root, {"OPENAI_API_KEY": VALUE, "GATE_TOKEN": GATE_VALUE})
    repo = Repository.discover(root)
    return repo, Supervisor(repo, parse_config(text))


def _store_secrets(root: Path, values: dict[str, str]) -> None:
    state = root / ".capataz"
    state.mkdir(exist_ok=True)
    store = Store.open(f"sqlite:///{state / 'capataz.db'}")
    try:
        vault = Vault(store, MasterKey.load(state))
        for name, value in values.items():
            vault.set(name, value, actor="test")
    finally:
        store.close()


# Agents prove they saw a secret by its digest: committing the value itself is a
# SECRET_LEAK, which blocks the run (see test_a_result_holding_a_secret_is_blocked).
DIGEST = 'printf "%s" "$OPENAI_API_KEY" | sha256sum | cut -d" " -f1'
NAMES = "env | cut -d= -f1"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_a_result_holding_a_secret_is_blocked(make_repo: Callable[..., Path]) -> None:
    repo, supervisor = _project(make_repo)
    before = git(repo.root, "rev-parse", "main")
    report = supervisor.execute(RunSpec("t-leak", "printenv OPENAI_API_KEY > key.txt", "gpt"))
    assert report.outcome is Outcome.BLOCKED
    leaks = [v for v in report.violations if v.type is ViolationType.SECRET_LEAK]
    assert [(v.file, v.line, v.details) for v in leaks] == [
        ("key.txt", 1, "the file's content holds the value of secret OPENAI_API_KEY")
    ]
    assert git(repo.root, "rev-parse", "main") == before


def _landed(repo: Repository, path: str) -> str:
    return git(repo.root, "show", f"main:{path}")


def test_an_agent_with_the_right_sees_it_in_env_others_see_nothing(
    make_repo: Callable[..., Path],
) -> None:
    repo, supervisor = _project(make_repo)
    report = supervisor.execute(RunSpec("t-env", f"{DIGEST} > seen.txt; {NAMES} > env.txt", "gpt"))
    assert report.outcome is Outcome.LANDED, report.reason  # both gates passed
    assert _landed(repo, "seen.txt").strip() == _digest(VALUE)
    assert "OPENAI_API_KEY" in _landed(repo, "env.txt")
    assert "GATE_TOKEN" not in _landed(repo, "env.txt")  # a gate's secret is the gate's

    report = supervisor.execute(
        RunSpec(
            "t-plain",
            "env > plain-env.txt; printenv OPENAI_API_KEY > plain.txt || echo absent > plain.txt",
            "plain",
        )
    )
    assert report.outcome is Outcome.LANDED, report.reason
    assert _landed(repo, "plain.txt").strip() == "absent"
    assert VALUE not in _landed(repo, "plain-env.txt")
    assert "OPENAI_API_KEY" not in _landed(repo, "plain-env.txt")


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_files_mode_puts_a_private_file_in_the_sandbox_and_nothing_on_the_host(
    make_repo: Callable[..., Path], sandbox: str
) -> None:
    repo, supervisor = _project(make_repo, mode="files", sandbox=sandbox)
    script = (
        'sha256sum < "$OPENAI_API_KEY_FILE" | cut -d" " -f1 > seen.txt; stat -c %a "$OPENAI_API_KEY_FILE" > mode.txt; '
        'echo "$OPENAI_API_KEY_FILE" > path.txt; '
        "printenv OPENAI_API_KEY > env.txt || echo absent > env.txt"
    )
    report = supervisor.execute(RunSpec("t-files", script, "gpt"))
    assert report.outcome is Outcome.LANDED, report.reason
    assert _landed(repo, "seen.txt").strip() == _digest(VALUE)
    assert _landed(repo, "mode.txt").strip() == "400"
    assert _landed(repo, "env.txt").strip() == "absent"  # files mode: not in the environment
    inside = Path(_landed(repo, "path.txt").strip())
    assert inside.name == "OPENAI_API_KEY"
    if sandbox == "bwrap":
        assert str(inside) == "/run/capataz/secrets/OPENAI_API_KEY"
    assert not inside.exists()  # nothing left on the host after the run
    assert not inside.parent.exists() or sandbox == "bwrap"


def test_a_task_waiting_for_a_credential_is_not_started(make_repo: Callable[..., Path]) -> None:
    repo, supervisor = _project(make_repo, store=False)
    with pytest.raises(CredentialsWaitingError) as waiting:
        supervisor.execute(RunSpec("t-wait", "true", "gpt"))
    assert str(waiting.value).startswith("waiting for credential request REQ-009")
    assert not (repo.root / ".capataz" / "progress" / "t-wait").exists()
    assert not (repo.root / ".capataz" / "master.key").exists()


def test_projects_without_secrets_never_need_a_master_key(
    make_repo: Callable[..., Path],
) -> None:
    root = make_repo(config='[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n')
    repo = Repository.discover(root)
    report = Supervisor(repo, parse_config((root / "capataz.toml").read_text())).execute(
        RunSpec("t-none", "echo hi > hi.txt", "shell")
    )
    assert report.outcome is Outcome.LANDED
    assert not (root / ".capataz" / "master.key").exists()
    assert not any(name.startswith("capataz-secrets-") for name in os.listdir("/dev/shm"))


def test_values_never_reach_the_bwrap_command_line() -> None:
    from capataz.config import Limits
    from capataz.sandbox.base import SandboxSpec
    from capataz.sandbox.bwrap import SECRETS_DIR, build_argv, secret_pipes

    spec = SandboxSpec(
        argv=["true"],
        workspace=Path("/tmp"),
        limits=Limits(),
        env={"OPENAI_API_KEY": VALUE},
        secret_files={"FILE_KEY": GATE_VALUE},
    )
    assert VALUE not in repr(spec) and GATE_VALUE not in repr(spec)
    with secret_pipes(spec.secret_files) as fds:
        ((name, fd),) = fds
        assert name == "FILE_KEY" and fd >= 10 and os.get_inheritable(fd)
        assert os.read(fd, 100) == GATE_VALUE.encode()
        for uid in (None, 200_000):
            argv = build_argv(
                Path("/usr/bin/bwrap"), spec, workspace=Path("/tmp"), uid=uid, secret_fds=fds
            )
            assert not any(VALUE in a or GATE_VALUE in a for a in argv)
            assert ["--perms", "0400", "--file", str(fd), f"{SECRETS_DIR}/FILE_KEY"] == argv[
                argv.index("--file") - 2 : argv.index("--file") + 3
            ]
