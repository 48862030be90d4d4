"""Acceptance: `capataz plan` and `capataz directive` as a user runs them, real
processes against the fake OpenAI-compatible server (the real ``openai`` SDK inside
`capataz`), from a waiting credential to applied tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.agents.fake_models.openai_chat import FakeOpenAIChat
from tests.planner.conftest import AGENTS, GOOD

KEY = "sk-cli-planner-key-0123456789"


def _config(base: str) -> str:
    return (
        f'[planner]\nendpoint = "{base}"\nmodel = "fake-planner"\ntimeout = "10s"\n'
        '\n[[requests]]\nid = "REQ-009"\nsecret = "OPENAI_API_KEY"\n' + AGENTS
    )


def _cli(repo: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k != "CAPATAZ_MASTER_KEY"}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "capataz"), *args],
            cwd=repo,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def _one_line_error(result: subprocess.CompletedProcess[str], *says: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in says:
        assert text in result.stderr


def test_plan_waits_for_its_key_then_stores_and_applies(make_repo: Callable[..., Path]) -> None:
    fake = FakeOpenAIChat(answer=GOOD)
    with fake as base:
        repo = make_repo(config=_config(base))
        cli = _cli(repo)
        _one_line_error(cli("plan"), "REQ-009", "`capataz secret set OPENAI_API_KEY`")
        assert fake.completions == []  # nothing was sent without a key
        stored = cli("secret", "set", "OPENAI_API_KEY", stdin=KEY + "\n")
        assert stored.returncode == 0, stored.stderr

        planned = cli("plan", "--goal", "ship it", "--json")
        assert planned.returncode == 0, planned.stderr
        answer = json.loads(planned.stdout)
        assert set(answer) == {
            "directives_created",
            "tasks_created",
            "directives",
            "model",
            "usage",
        }
        assert (answer["directives_created"], answer["tasks_created"]) == (1, 0)
        assert answer["model"] == "fake-planner"
        assert answer["usage"]["total_tokens"] == 1290
        directive = answer["directives"][0]
        assert directive["status"] == "PENDING"
        assert KEY not in planned.stdout + planned.stderr

    listed = json.loads(cli("directive", "list", "--json").stdout)
    assert [d["id"] for d in listed] == [directive["id"]]
    shown = cli("directive", "show", directive["id"])
    assert shown.returncode == 0, shown.stderr
    assert "Build, then test" in shown.stdout
    assert "build" in shown.stdout

    applied = cli("directive", "apply", directive["id"], "--json")
    assert applied.returncode == 0, applied.stderr
    data = json.loads(applied.stdout)
    assert data["status"] == "APPLIED"
    created = data["created_tasks"]
    assert [t["title"] for t in created] == ["Do build", "Do test", "Do docs"]
    assert [t["status"] for t in created] == ["ready", "pending", "pending"]
    assert created[1]["depends_on"] == [created[0]["id"]]
    tasks = json.loads(cli("task", "list", "--json").stdout)
    assert [t["id"] for t in tasks] == data["created_task_ids"]

    figures = json.loads(cli("metrics", "--json").stdout)["planner"]
    assert (figures["calls"], figures["failed"], figures["tokens_in"]) == (1, 0, 1234)
    shown_metrics = cli("metrics")
    assert shown_metrics.returncode == 0, shown_metrics.stderr
    assert "planner.calls" in shown_metrics.stdout
    assert "planner.tokens_out" in shown_metrics.stdout

    _one_line_error(cli("directive", "apply", directive["id"]), "already APPLIED")
    _one_line_error(cli("directive", "reject", directive["id"], "--reason", "no"), "already")
    _one_line_error(cli("directive", "show", "d-nope"), "no directive d-nope")
    _one_line_error(cli("directive", "list", "--status", "maybe"), "PENDING, APPLIED, REJECTED")


def test_reject_and_a_refused_key_from_the_shell(make_repo: Callable[..., Path]) -> None:
    with FakeOpenAIChat(answer=GOOD) as base:
        repo = make_repo(config=_config(base))
        cli = _cli(repo)
        assert cli("secret", "set", "OPENAI_API_KEY", stdin=KEY + "\n").returncode == 0
        planned = json.loads(cli("plan", "--json").stdout)
    directive_id = planned["directives"][0]["id"]
    rejected = cli("directive", "reject", directive_id, "--reason", "not this sprint", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["status"] == "REJECTED"
    assert json.loads(cli("task", "list", "--json").stdout) == []

    with FakeOpenAIChat("unauthorized") as base:
        (repo / "capataz.toml").write_text(_config(base))
        refused = cli("plan")
    _one_line_error(refused, "refused the key (401)", "capataz secret set OPENAI_API_KEY")
    assert KEY not in refused.stderr


def test_plan_without_a_planner_table_says_how_to_add_one(make_repo: Callable[..., Path]) -> None:
    cli = _cli(make_repo())
    _one_line_error(cli("plan"), "no [planner] table", "docs/planner.md")
