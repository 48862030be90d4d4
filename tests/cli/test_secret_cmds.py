"""Acceptance: `capataz secret …` and `capataz request list` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest
from cryptography.fernet import Fernet

from capataz.secrets.vault import KEY_ENV, MasterKey, Vault
from capataz.store import Store

VALUE = "sk-test-7c1e5b0a-plaintext"
CONFIG = """
[agents.gpt]
command = ["bash", "-c", "{instruction}"]
secrets = ["OPENAI_API_KEY"]

[[requests]]
id = "REQ-009"
secret = "OPENAI_API_KEY"
description = "OpenAI key for the planner"
agents = ["gpt"]
"""


def capataz(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "capataz", *args],
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    assert text.count("error:") == 1, result.stderr
    text = text[text.index("error:") :]  # (a warning may come first)
    for needle in needles:
        assert needle in text, text


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


def _requests(repo: Path) -> dict[str, str]:
    listed = capataz("request", "list", "--json", cwd=repo)
    assert listed.returncode == 0, listed.stderr
    return {r["id"]: r["status"] for r in json.loads(listed.stdout)}


def test_set_from_stdin_is_encrypted_at_rest_and_provides_the_request(repo: Path) -> None:
    assert _requests(repo) == {"REQ-009": "WAITING"}
    stored = capataz("secret", "set", "OPENAI_API_KEY", cwd=repo, stdin=VALUE + "\n")
    assert stored.returncode == 0, stored.stderr
    assert "REQ-009 is now PROVIDED" in stored.stdout
    assert _requests(repo) == {"REQ-009": "PROVIDED"}

    listed = capataz("secret", "list", "--json", cwd=repo)
    assert listed.returncode == 0, listed.stderr
    assert VALUE not in listed.stdout
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "OPENAI_API_KEY" and row["status"] == "PROVIDED"
    assert row["agents"] == ["gpt"] and row["requests"] == ["REQ-009"]
    assert row["rotated_at"] is None and row["updated_at"]

    state = repo / ".capataz"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {"capataz.db", "master.key"} <= {p.name for p in files}
    for path in files:  # the database, its -wal, the key file, progress: never the value
        assert VALUE.encode() not in path.read_bytes(), path
    store = Store.open(f"sqlite:///{state / 'capataz.db'}")
    try:  # exactly one trailing newline was stripped
        assert Vault(store, MasterKey.load(state, create=False)).get("OPENAI_API_KEY") == VALUE
    finally:
        store.close()


def test_hidden_prompt_asks_twice(repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "capataz", "secret", "set", "OPENAI_API_KEY"],
        cwd=str(repo),
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.expect("value of OPENAI_API_KEY")
    child.sendline(VALUE)
    child.expect("again")
    child.sendline(VALUE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert VALUE not in (child.before or "")  # not echoed
    assert _requests(repo) == {"REQ-009": "PROVIDED"}


def test_a_value_on_the_command_line_is_refused(repo: Path) -> None:
    refused = capataz("secret", "set", "OPENAI_API_KEY", VALUE, cwd=repo, stdin="")
    one_line_error(refused, "not taken from the command line", "nothing was stored")
    assert VALUE not in refused.stderr
    assert _requests(repo) == {"REQ-009": "WAITING"}


@pytest.mark.parametrize(
    ("args", "stdin", "needles"),
    [
        (("secret", "set", "OPENAI_API_KEY"), "\n", ("empty value",)),
        (("secret", "set", "1-bad"), "x", ("'1-bad' is not a secret name",)),
        (("secret", "rm", "NOPE"), None, ("no secret NOPE",)),
    ],
)
def test_bad_input_is_one_line(
    repo: Path, args: tuple[str, ...], stdin: str | None, needles: tuple[str, ...]
) -> None:
    one_line_error(capataz(*args, cwd=repo, stdin=stdin), *needles)


def test_wrong_key_is_one_clear_line(repo: Path) -> None:
    assert capataz("secret", "set", "OPENAI_API_KEY", cwd=repo, stdin=VALUE).returncode == 0
    other = {KEY_ENV: Fernet.generate_key().decode()}
    for args in (("secret", "set", "OTHER"), ("secret", "rotate-key")):
        result = capataz(*args, cwd=repo, stdin="v", env=other)
        one_line_error(result, "CAPATAZ_MASTER_KEY does not open secret OPENAI_API_KEY")
    listed = capataz("secret", "list", "--json", cwd=repo, env=other)  # names need no key
    assert listed.returncode == 0 and "OTHER" not in listed.stdout


def test_a_key_file_others_can_read_is_refused(repo: Path) -> None:
    assert capataz("secret", "set", "OPENAI_API_KEY", cwd=repo, stdin=VALUE).returncode == 0
    key = repo / ".capataz" / "master.key"
    key.chmod(0o644)
    one_line_error(capataz("secret", "set", "OTHER", cwd=repo, stdin="v"), f"chmod 600 {key}")


def test_rotate_key_and_rm(repo: Path) -> None:
    for name in ("OPENAI_API_KEY", "OTHER_TOKEN"):
        assert capataz("secret", "set", name, cwd=repo, stdin=VALUE + name).returncode == 0
    key = repo / ".capataz" / "master.key"
    before = key.read_text()
    rotated = capataz("secret", "rotate-key", cwd=repo)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 values in" in " ".join(rotated.stdout.split())
    assert key.read_text() != before and len(key.read_text().split()) == 1
    listed = json.loads(capataz("secret", "list", "--json", cwd=repo).stdout)
    assert all(row["rotated_at"] for row in listed)

    removed = capataz("secret", "rm", "OPENAI_API_KEY", cwd=repo)
    assert removed.returncode == 0 and "REQ-009 is WAITING again" in removed.stdout
    assert _requests(repo) == {"REQ-009": "WAITING"}
    store = Store.open(f"sqlite:///{repo / '.capataz' / 'capataz.db'}")
    try:
        vault = Vault(store, MasterKey.load(repo / ".capataz", create=False))
        assert vault.values() == {"OTHER_TOKEN": VALUE + "OTHER_TOKEN"}
    finally:
        store.close()


def test_exec_refuses_an_agent_waiting_for_a_credential(repo: Path) -> None:
    result = capataz("exec", "--agent", "gpt", "--id", "t-wait", "true", cwd=repo)
    one_line_error(
        result,
        "waiting for credential request REQ-009 (OPENAI_API_KEY): provide it with "
        "`capataz secret set OPENAI_API_KEY` or the panel's Setup",
    )
    assert not (repo / ".capataz" / "progress" / "t-wait").exists()  # nothing started
    assert not (repo / ".capataz" / "master.key").exists()  # and no key was minted
