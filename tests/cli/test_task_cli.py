"""Acceptance: `capataz task`, `audit` and `db` as a user runs them, in real processes,
on SQLite and (for the key paths) on PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import pg_admin_url, pg_url

__all__ = ["pg_admin_url", "pg_url"]  # PostgreSQL fixtures of the store suite, reused

CONFIG = '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n'

DIAMOND = """
tasks:
  - name: base
    instruction: create the module
  - name: left
    instruction: add the parser
    depends_on: base
  - name: right
    instruction: add the printer
    depends_on: [base]
  - name: top
    instruction: wire parser and printer together
    depends_on: [left, right]
"""


class Cli:
    """`python -m capataz` in one repository against one database."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.json("task", "list"))


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *needles: str, code: int = 2
) -> None:
    assert result.returncode == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    assert text.startswith("error:"), result.stderr
    for needle in needles:
        assert needle in text, text


def _env() -> dict[str, str]:
    # Wide enough that Rich tables do not fold the ids the tests look for.
    return {**os.environ, "COLUMNS": "200"}


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG)


@pytest.fixture
def cli(repo: Path) -> Cli:
    """SQLite: the default .capataz/capataz.db of the repository."""
    return Cli(repo, _env())


@pytest.fixture(params=["sqlite", "postgresql"])
def any_cli(request: pytest.FixtureRequest, repo: Path) -> Cli:
    """The same commands on SQLite and on PostgreSQL (CAPATAZ_DATABASE_URL)."""
    env = _env()
    if request.param == "postgresql":
        env["CAPATAZ_DATABASE_URL"] = str(request.getfixturevalue("pg_url"))
    return Cli(repo, env)


# -- the happy paths, on both databases --------------------------------------------------


def test_add_list_show_cancel_requeue_round_trip(any_cli: Cli) -> None:
    cli = any_cli
    first = cli.json(
        "task", "add", "echo one > one.txt",
        "--title", "First", "--priority", "5", "--max-attempts", "2",
        "--label", "gpu", "--label", "fast", "--run-after", "10m", "--allow-high",
    )  # fmt: skip
    assert first["created"] and first["status"] == "ready"
    assert (first["title"], first["priority"], first["max_attempts"]) == ("First", 5, 2)
    assert first["labels"] == ["fast", "gpu"] and first["allow_high"] is True
    due = datetime.fromisoformat(first["run_after"]) - datetime.now(UTC)
    assert timedelta(minutes=9) < due <= timedelta(minutes=10)

    second = cli.json("task", "add", "echo two", "--depends-on", first["id"])
    assert second["status"] == "pending" and second["depends_on"] == [first["id"]]
    assert second["title"] == "echo two"  # default: the instruction

    listed = cli.tasks()
    assert [t["id"] for t in listed] == [first["id"], second["id"]]
    assert [t["id"] for t in cli.json("task", "list", "--status", "pending")] == [second["id"]]
    table = cli.ok("task", "list")
    for needle in (first["id"], second["id"], "ready", "pending", "First", "0/2"):
        assert needle in table

    shown = cli.json("task", "show", second["id"])
    assert shown == {k: v for k, v in second.items() if k != "created"}
    human = cli.ok("task", "show", second["id"])
    assert "depends on" in human and first["id"] in human and "echo two" in human

    cancelled = cli.ok("task", "cancel", first["id"], "--reason", "not now")
    assert f"cancelled {first['id']}" in cancelled and "not now" in cancelled
    after = {t["id"]: t for t in cli.tasks()}
    assert after[first["id"]]["status"] == "cancelled"
    assert after[first["id"]]["reason"] == "not now"
    # A dependent of a cancelled task never runs, and says why.
    assert after[second["id"]]["status"] == "cancelled"
    assert first["id"] in after[second["id"]]["reason"]

    requeued = cli.json("task", "requeue", first["id"], "--backoff", "30s")
    assert requeued["status"] == "ready" and requeued["attempts"] == 0
    wait = datetime.fromisoformat(requeued["run_after"]) - datetime.now(UTC)
    assert timedelta(seconds=20) < wait <= timedelta(seconds=30)
    assert "requeued" in cli.ok("task", "requeue", second["id"])


def test_import_diamond_then_more_tasks_depending_on_it(any_cli: Cli, tmp_path: Path) -> None:
    cli = any_cli
    (tmp_path / "plan.yaml").write_text(DIAMOND)
    table = cli.ok("task", "import", str(tmp_path / "plan.yaml"))
    assert "4 added" in table
    for name in ("base", "left", "right", "top"):
        assert name in table
    by_title = {t["instruction"]: t for t in cli.tasks()}
    base, left = by_title["create the module"], by_title["add the parser"]
    right, top = by_title["add the printer"], by_title["wire parser and printer together"]
    assert base["status"] == "ready"
    assert left["status"] == right["status"] == top["status"] == "pending"
    assert left["depends_on"] == right["depends_on"] == [base["id"]]
    assert top["depends_on"] == sorted([left["id"], right["id"]])

    # JSON file, list form; depends on an id that is already queued.
    more = [
        {"name": "docs", "instruction": "document it", "depends_on": [top["id"]]},
        {"instruction": "unrelated", "priority": 3},
    ]
    (tmp_path / "more.json").write_text(json.dumps(more))
    added = cli.json("task", "import", str(tmp_path / "more.json"))
    assert [(t["name"], t["status"], t["created"]) for t in added] == [
        ("docs", "pending", True),
        ("#2", "ready", True),
    ]
    assert added[0]["depends_on"] == [top["id"]]
    assert len(cli.tasks()) == 6


def test_import_cycle_is_refused_naming_it(any_cli: Cli, tmp_path: Path) -> None:
    cycle = """
- {name: ok, instruction: fine}
- {name: a, instruction: x, depends_on: [c]}
- {name: b, instruction: y, depends_on: [a]}
- {name: c, instruction: z, depends_on: [b, ok]}
"""
    (tmp_path / "cycle.yml").write_text(cycle)
    result = any_cli("task", "import", str(tmp_path / "cycle.yml"))
    assert_one_line_error(result, "dependency cycle: ")
    named = result.stderr.split("dependency cycle: ")[1].split(" —")[0].split(" -> ")
    assert named[0] == named[-1]  # closed, and in dependency order from wherever it starts
    assert " -> ".join(named[:-1]) in " -> ".join(["a", "c", "b", "a", "c", "b"])
    assert any_cli.tasks() == []  # all or nothing


def test_import_unknown_dependency_is_refused(any_cli: Cli, tmp_path: Path) -> None:
    text = "- {name: a, instruction: x}\n- {name: b, instruction: y, depends_on: [a, ghost]}\n"
    (tmp_path / "plan.yaml").write_text(text)
    result = any_cli("task", "import", str(tmp_path / "plan.yaml"))
    assert_one_line_error(result, "task b depends on unknown task ghost")
    assert any_cli.tasks() == []


def test_idempotency_key_returns_the_existing_task(any_cli: Cli, tmp_path: Path) -> None:
    first = any_cli.json("task", "add", "deploy", "--idempotency-key", "deploy-42")
    again = any_cli.json("task", "add", "deploy again", "--idempotency-key", "deploy-42")
    assert again["id"] == first["id"] and not again["created"]
    assert again["instruction"] == "deploy"
    human = any_cli.ok("task", "add", "deploy", "--idempotency-key", "deploy-42")
    assert f"exists {first['id']}" in human and "nothing added" in human
    (tmp_path / "t.yaml").write_text(
        "- {name: d, instruction: deploy, idempotency_key: deploy-42}\n"
        "- {name: after, instruction: check, depends_on: [d]}\n"
    )
    imported = any_cli.json("task", "import", str(tmp_path / "t.yaml"))
    assert imported[0]["id"] == first["id"] and not imported[0]["created"]
    assert imported[1]["depends_on"] == [first["id"]]
    assert len(any_cli.tasks()) == 2


def test_audit_verify_and_export(any_cli: Cli, tmp_path: Path) -> None:
    task = any_cli.json("task", "add", "one")
    any_cli.ok("task", "cancel", task["id"])
    any_cli.ok("task", "requeue", task["id"])
    assert "audit trail intact (3 entries)" in any_cli.ok("audit", "verify")
    assert any_cli.json("audit", "verify") == {
        "ok": True,
        "entries": 3,
        "first_bad_entry": None,
        "reason": None,
    }
    lines = any_cli.ok("audit", "export").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["action"] for e in entries] == ["task.created", "task.cancelled", "task.requeued"]
    assert all(e["subject"] == task["id"] and e["actor"].startswith("cli") for e in entries)
    assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    target = tmp_path / "audit.jsonl"
    assert "exported 3 audit entries" in any_cli.ok("audit", "export", "--output", str(target))
    assert target.read_text().splitlines() == lines


def test_db_upgrade_prints_the_revision(any_cli: Cli) -> None:
    first = any_cli.json("db", "upgrade")
    assert first["from"] is None and first["revision"]
    assert "password" not in json.dumps(first)
    again = any_cli.ok("db", "upgrade")
    assert f"database at revision {first['revision']} (already up to date)" in again


# -- tampering and bad input (SQLite) ----------------------------------------------------


def test_audit_verify_names_an_edited_entry(cli: Cli, repo: Path) -> None:
    for n in range(3):
        cli.ok("task", "add", f"task {n}")
    assert "intact (3 entries)" in cli.ok("audit", "verify")
    with sqlite3.connect(repo / ".capataz" / "capataz.db") as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    result = cli("audit", "verify")
    assert_one_line_error(
        result, "audit trail broken at entry 2", "does not match its hash", code=1
    )
    data = json.loads(cli("audit", "verify", "--json").stdout)
    assert data["ok"] is False and data["first_bad_entry"] == 2


def test_audit_verify_names_a_deleted_entry(cli: Cli, repo: Path) -> None:
    for n in range(3):
        cli.ok("task", "add", f"task {n}")
    with sqlite3.connect(repo / ".capataz" / "capataz.db") as db:
        db.execute("DELETE FROM audit WHERE seq = 2")
    assert_one_line_error(cli("audit", "verify"), "entry 3", "missing", code=1)


@pytest.mark.parametrize(
    ("content", "name", "needles"),
    [
        ("- instruction: a\n  name: x: y\n", "bad.yaml", ("bad.yaml:2: not valid YAML",)),
        ('[{"instruction": "a"},]', "bad.json", ("bad.json:1: not valid JSON",)),
        (
            "- {name: a, instruction: x}\n- {name: b, title: t}\n",
            "missing.yaml",
            ("task #2 'b': instruction is required",),
        ),
        (
            "- {instruction: x, priority: high}\n",
            "typed.yaml",
            ("task #1: priority: Input should be a valid integer",),
        ),
        ("- {instruction: x, agent: gpt}\n", "agent.yaml", ("task #1: unknown agent 'gpt'",)),
        ("- {instruction: x}\n", "plan.txt", ("name the file *.json, *.yaml or *.yml",)),
        (None, "absent.yaml", ("absent.yaml: cannot be read",)),
    ],
)
def test_bad_import_files_are_one_clear_line(
    cli: Cli, tmp_path: Path, content: str | None, name: str, needles: tuple[str, ...]
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert_one_line_error(cli("task", "import", str(path)), *needles)
    assert not (cli.repo / ".capataz" / "capataz.db").exists()  # refused before the store


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ("task", "list", "--status", "bogus"),
            ("unknown status 'bogus'", "valid statuses: pending, ready, running, done"),
        ),
        (("task", "show", "t-nope"), ("no task t-nope",)),
        (("task", "cancel", "t-nope"), ("no task t-nope",)),
        (("task", "requeue", "t-nope"), ("no task t-nope",)),
        (("task", "requeue", "t-nope", "--backoff", "3x"), ("--backoff: '3x' is not a duration",)),
        (("task", "add", "x", "--agent", "gpt"), ("unknown agent 'gpt'", "known agents: shell")),
        (("task", "add", "x", "--run-after", "soonish"), ("--run-after: 'soonish' is neither",)),
        (("task", "add", "x", "--max-attempts", "0"), ("--max-attempts 0: must be at least 1",)),
        (("task", "add", "  "), ("the instruction is empty",)),
        (("task", "add", "x", "--id", "../up"), ("invalid task id",)),
        (
            ("task", "add", "x", "--depends-on", "t-ghost"),
            ("the new task depends on unknown task t-ghost",),
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    cli: Cli, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    assert_one_line_error(cli(*args), *needles)


def test_state_changes_that_do_not_apply(cli: Cli) -> None:
    task = cli.json("task", "add", "x")
    assert_one_line_error(cli("task", "requeue", task["id"]), "is ready; nothing to requeue")
    cli.ok("task", "cancel", task["id"])
    assert_one_line_error(cli("task", "cancel", task["id"]), "already ended cancelled")
    assert_one_line_error(cli("task", "add", "y", "--id", task["id"]), "already exists")


def test_empty_list_says_how_to_add(cli: Cli) -> None:
    assert "no tasks; add some" in cli.ok("task", "list")
    assert "no failed tasks" in cli.ok("task", "list", "--status", "FAILED")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u@h/db", "capataz supports SQLite and PostgreSQL"),
        ("postgresql://nobody:secret@127.0.0.1:9/x", "database postgresql+psycopg://nobody:***@"),
    ],
)
def test_unusable_database_is_one_line_without_password(repo: Path, url: str, needle: str) -> None:
    cli = Cli(repo, {**_env(), "CAPATAZ_DATABASE_URL": url})
    for args in (("task", "list"), ("db", "upgrade"), ("audit", "verify")):
        result = cli(*args)
        assert_one_line_error(result, needle)
        assert "secret" not in result.stderr


def test_outside_a_repository(tmp_path: Path) -> None:
    result = Cli(tmp_path, _env())("task", "list")
    assert_one_line_error(result, "not inside a git repository")


def test_queue_views_and_runner_commands_refuse_bad_input(
    tmp_path: Path, make_repo: Callable[..., Path]
) -> None:
    repo = make_repo("views")
    for args, needle in [
        (("run", "show", "run-nope"), "no run run-nope"),
        (("runner", "stop"), "no runner is running"),
        (("runner", "run", "--concurrency", "0"), "Invalid value"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert needle in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    metrics = subprocess.run(
        [sys.executable, "-m", "capataz", "metrics", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(metrics.stdout)
    assert data["tasks"]["ready"] == 0 and data["runners"]["online"] == 0
    assert (
        data["runs"]["fail_rate_last_20"] == 0.0
        and data["backlog"]["oldest_ready_age_seconds"] is None
    )


def test_task_show_json_has_the_last_error(repo: Path) -> None:
    """The runbook's last_error, in `task show --json` as in the API: null until an
    attempt fails, then that attempt's reason."""
    from capataz.store import Store

    cli = Cli(repo, _env())
    task = cli.json("task", "add", "false", "--max-attempts", "1")
    assert task["last_error"] is None
    store = Store.open(f"sqlite:///{repo / '.capataz' / 'capataz.db'}")
    try:
        claimed = store.leases.claim("r1", 60)
        assert claimed is not None
        store.leases.complete(claimed.id, claimed.fencing_token, "failed", "exit 1 in execute")
    finally:
        store.close()
    shown = cli.json("task", "show", task["id"])
    assert (shown["status"], shown["last_error"]) == ("failed", "exit 1 in execute")
