"""Acceptance: `capataz context get|set|list|rm` as a user or a script runs them, in real
processes, against the repository's default SQLite store."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from tests.cli.test_task_cli import Cli, assert_one_line_error

from capataz.secrets.vault import KEY_ENV

CONFIG = '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n'


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


@pytest.fixture
def cli(repo: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    return Cli(repo, {**env, "COLUMNS": "200"})


def test_set_get_list_rm_round_trip(cli: Cli, repo: Path) -> None:
    assert "set build.version" in cli.ok("context", "set", "build.version", "1.2.3")
    assert cli.ok("context", "get", "build.version") == "1.2.3\n"  # strings as they are
    cli.ok("context", "set", "api", '{"url": "http://x", "port": 80}', "--json-value")
    assert json.loads(cli.ok("context", "get", "api")) == {"url": "http://x", "port": 80}
    task = cli.json("task", "add", "true", "--id", "t1")
    out = cli.ok("context", "set", "deploy.when", "soon", "--ttl", "1h", "--task", task["id"])
    assert "expires" in out

    shown = cli.json("context", "get", "deploy.when")
    assert (shown["key"], shown["value"], shown["task_id"]) == ("deploy.when", "soon", "t1")
    assert shown["expires_at"] is not None

    listed = cli.json("context", "list")
    assert [row["key"] for row in listed] == ["api", "build.version", "deploy.when"]
    assert all("value" not in row for row in listed)  # values only when asked
    with_values = cli.json("context", "list", "--values", "--prefix", "build.")
    assert [(r["key"], r["value"]) for r in with_values] == [("build.version", "1.2.3")]
    table = cli.ok("context", "list")
    for needle in ("api", "build.version", "deploy.when", "t1", "never"):
        assert needle in table
    assert "1.2.3" not in table
    assert "1.2.3" in cli.ok("context", "list", "--values")

    assert "removed api" in cli.ok("context", "rm", "api")
    assert [row["key"] for row in cli.json("context", "list")] == ["build.version", "deploy.when"]

    # First use created the key file (owner-only), and values are encrypted at rest.
    key_file = repo / ".capataz" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    database = b"".join(
        p.read_bytes() for p in (repo / ".capataz").iterdir() if p.name.startswith("capataz.db")
    )
    assert b"build.version" in database and b"1.2.3" not in database


def test_the_master_key_can_come_from_the_environment(cli: Cli, repo: Path) -> None:
    cli.env[KEY_ENV] = Fernet.generate_key().decode()
    cli.ok("context", "set", "k", "v")
    assert cli.ok("context", "get", "k") == "v\n"
    assert not (repo / ".capataz" / "master.key").exists()
    cli.env[KEY_ENV] = Fernet.generate_key().decode()  # the wrong key: one clear line
    assert_one_line_error(cli("context", "get", "k"), "does not open context entry k")


def test_mistakes_are_one_line_with_a_fix(cli: Cli) -> None:
    assert_one_line_error(cli("context", "get", "bad key"), "'bad key' is not a context key")
    assert_one_line_error(cli("context", "set", "a;b", "v"), "is not a context key")
    assert_one_line_error(cli("context", "rm", "../x y"), "is not a context key")
    assert_one_line_error(
        cli("context", "get", "missing"), "no context entry missing", "context list", code=1
    )
    assert_one_line_error(cli("context", "rm", "missing"), "no context entry missing", code=1)
    assert_one_line_error(
        cli("context", "set", "k", "{not json", "--json-value"), "--json-value", "not JSON"
    )
    assert_one_line_error(cli("context", "set", "k", "v", "--ttl", "soon"), "--ttl")
    assert_one_line_error(cli("context", "set", "k", "v", "--task", "nope"), "no task nope")
    assert cli.json("context", "list") == []
