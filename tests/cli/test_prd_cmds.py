"""Acceptance: `capataz prd import` and `capataz prd status` as a user runs them, in
real processes on a scratch repository (SQLite)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.cli.test_task_cli import Cli, assert_one_line_error

from capataz.store import Store, TaskState, database_url

CONFIG = '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n'
FIXTURES = Path(__file__).parents[1] / "prd" / "fixtures"
PRD = "docs/prd/throttling.md"

THROTTLING = """\
# PRD: Login throttling

## Objectives
- Stop password guessing

## Acceptance Criteria

### AC1: Count failures
- [ ] Failures are counted per account
- [x] The counter resets on success

### AC2: Lock accounts
- [ ] Five failures lock the account

### AC3: Tell the user
Depends on: AC1
- [ ] The login page says when to retry

## Out of Scope
- CAPTCHAs
"""


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(config=CONFIG, files={PRD: THROTTLING})


@pytest.fixture
def cli(repo: Path) -> Cli:
    return Cli(repo, {**os.environ, "COLUMNS": "200"})


def test_import_queues_one_task_per_criterion_in_order(cli: Cli) -> None:
    rows = cli.json("prd", "import", PRD)
    assert [(r["ac"], r["created"], r["status"]) for r in rows] == [
        ("AC1", True, "ready"),
        ("AC2", True, "pending"),
        ("AC3", True, "pending"),
    ]
    ac1, ac2, ac3 = rows
    assert ac1["depends_on"] == []
    assert ac2["depends_on"] == [ac1["id"]]  # by default: the criterion before
    assert ac3["depends_on"] == [ac1["id"]]  # "Depends on: AC1"
    assert ac1["title"] == "Login throttling: AC1 Count failures"
    assert ac1["idempotency_key"] == f"prd:{PRD}#AC1"
    assert all(r["labels"] == ["prd"] and r["agent"] == "shell" for r in rows)
    assert "- [ ] Failures are counted per account" in ac1["instruction"]
    assert "## Out of scope (do not do)\n- CAPTCHAs" in ac1["instruction"]
    assert "- Stop password guessing" in ac1["instruction"]
    assert [t["id"] for t in cli.tasks()] == [r["id"] for r in rows]


def test_reimport_adds_nothing_and_a_new_criterion_joins_the_queued_ones(
    cli: Cli, repo: Path
) -> None:
    first = {r["ac"]: r["id"] for r in cli.json("prd", "import", PRD)}
    again = cli.ok("prd", "import", PRD)
    assert again.count("already queued") == 4  # three rows and the summary
    assert "0 added, 3 already queued" in again
    for task_id in first.values():
        assert task_id in again
    assert len(cli.tasks()) == 3

    (repo / PRD).write_text(
        THROTTLING.replace("## Out of Scope", "### AC4: Unlock by mail\n- [ ] A link\n\n## Out")
    )
    rows = cli.json("prd", "import", PRD)
    assert [(r["ac"], r["created"]) for r in rows] == [
        ("AC1", False),
        ("AC2", False),
        ("AC3", False),
        ("AC4", True),
    ]
    assert rows[3]["depends_on"] == [first["AC3"]]
    assert len(cli.tasks()) == 4


def test_dry_run_prints_the_plan_and_writes_nothing(cli: Cli, repo: Path) -> None:
    table = cli.ok("prd", "import", PRD, "--dry-run")
    for needle in ("Login throttling", "AC1", "Count failures", "depends on", "checklist"):
        assert needle in table
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line[:2] == "AC"}
    assert lines["AC1"][-2:] == ["-", "2"]
    assert lines["AC2"][-2:] == ["AC1", "1"]
    assert lines["AC3"][-2:] == ["AC1", "1"]
    plan = cli.json("prd", "import", PRD, "--dry-run", "--agent", "shell")
    assert [(p["ac"], p["depends_on"], p["checklist"], p["checked"]) for p in plan] == [
        ("AC1", [], 2, 1),
        ("AC2", ["AC1"], 1, 0),
        ("AC3", ["AC1"], 1, 0),
    ]
    assert plan[0]["idempotency_key"] == f"prd:{PRD}#AC1"
    assert not (repo / ".capataz").exists()  # no database, not even an empty one


def test_status_shows_each_criterion_its_task_state_and_ticks(cli: Cli, repo: Path) -> None:
    before = cli.json("prd", "status", PRD)
    assert [(r["ac"], r["task_id"], r["status"]) for r in before] == [
        ("AC1", None, None),
        ("AC2", None, None),
        ("AC3", None, None),
    ]
    assert "not imported" in cli.ok("prd", "status", PRD)

    ids = {r["ac"]: r["id"] for r in cli.json("prd", "import", PRD)}
    cli.ok("task", "cancel", ids["AC2"])
    (repo / PRD).write_text(THROTTLING.replace("- [ ] Five failures", "- [x] Five failures"))
    rows = cli.json("prd", "status", PRD)
    assert [(r["ac"], r["task_id"], r["status"], r["checked"], r["total"]) for r in rows] == [
        ("AC1", ids["AC1"], "ready", 1, 2),
        ("AC2", ids["AC2"], "cancelled", 1, 1),
        ("AC3", ids["AC3"], "pending", 0, 1),
    ]
    table = cli.ok("prd", "status", PRD)
    for needle in (ids["AC1"], "ready", "cancelled", "pending", "1/2", "1/1", "0/1"):
        assert needle in table


def test_the_documented_template_imports(cli: Cli, repo: Path) -> None:
    (repo / "docs" / "prd" / "template.md").write_text((FIXTURES / "prd_template.md").read_text())
    rows = cli.json("prd", "import", "docs/prd/template.md")
    assert [(r["title"], r["status"]) for r in rows] == [
        ("Feature X: AC1 Título del AC", "ready"),
        ("Feature X: AC2 Otro AC", "pending"),
    ]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("## Acceptance Criteria\n### AC1: a\n", ["bad.md:1: no title", "# PRD: title"]),
        ("# PRD: x\n", ["bad.md:1: no acceptance criteria", "### AC1: title"]),
        (
            "# PRD: x\n## Acceptance Criteria\n### AC1: a\n### AC1: b\n",
            ["bad.md:4: AC1 is used twice"],
        ),
        (
            "# PRD: x\n## Acceptance Criteria\n### AC1: a\nDepends on: AC5\n",
            ["bad.md:4: AC1 depends on AC5, which the PRD does not define"],
        ),
    ],
)
def test_a_bad_prd_is_one_line_and_exit_2(
    cli: Cli, repo: Path, text: str, needles: list[str]
) -> None:
    (repo / "bad.md").write_text(text)
    for command in ("import", "status"):
        assert_one_line_error(cli("prd", command, "bad.md"), *needles)
    assert_one_line_error(cli("prd", "import", "bad.md", "--dry-run"), *needles)
    assert not (repo / ".capataz").exists()


def test_missing_outside_or_unknown_agent_are_one_line(cli: Cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("prd", "import", "nope.md"), "nope.md: cannot be read")
    outside = tmp_path / "outside.md"
    outside.write_text(THROTTLING)
    assert_one_line_error(cli("prd", "import", str(outside)), "outside the repository")
    assert_one_line_error(cli("prd", "import", PRD, "--agent", "gpt"), "AC1", "gpt")
    assert cli.tasks() == []


# -- ticking the criteria whose tasks are done ------------------------------------------


def _finish(repo: Path, task_id: str) -> None:
    """Report ``task_id`` done as a runner would (the suite has cheaper ways to a done
    task than a sandboxed run; this command only reads the state)."""
    store = Store.open(database_url(repo))
    try:
        claimed = store.leases.claim("test-runner")
        assert claimed is not None and claimed.id == task_id
        assert store.leases.complete(claimed.id, claimed.fencing_token, TaskState.DONE)
    finally:
        store.close()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_tick_commits_the_done_criteria_on_the_target_branch(cli: Cli, repo: Path) -> None:
    ids = {r["ac"]: r["id"] for r in cli.json("prd", "import", PRD)}
    before = _git(repo, "rev-parse", "main")
    assert "nothing to tick" in cli.ok("prd", "tick", PRD)
    assert _git(repo, "rev-parse", "main") == before

    _finish(repo, ids["AC1"])
    result = cli.json("prd", "tick", PRD)
    assert result["ticked"] == ["AC1"] and result["branch"] == "main"
    assert _git(repo, "rev-parse", "main") == result["commit"] != before
    assert _git(repo, "log", "-1", "--format=%an %s", "main") == (
        f"capataz prd: tick AC1 in {PRD} (their tasks are done)"
    )
    expected = THROTTLING.replace("- [ ] Failures are counted", "- [x] Failures are counted")
    assert _git(repo, "show", f"main:{PRD}") + "\n" == expected
    assert (repo / PRD).read_text() == expected  # the clean checkout moved with it
    assert _git(repo, "status", "--porcelain") == ""
    status = {r["ac"]: (r["checked"], r["total"]) for r in cli.json("prd", "status", PRD)}
    assert status == {"AC1": (2, 2), "AC2": (0, 1), "AC3": (0, 1)}
    assert "nothing to tick" in cli.ok("prd", "tick", PRD)  # done once is enough
    assert _git(repo, "rev-parse", "main") == result["commit"]


def test_tick_leaves_a_dirty_checkout_and_its_branch_alone(cli: Cli, repo: Path) -> None:
    ids = {r["ac"]: r["id"] for r in cli.json("prd", "import", PRD)}
    _finish(repo, ids["AC1"])
    (repo / "README.md").write_text("# edited, not committed\n")
    before = _git(repo, "rev-parse", "main")
    result = cli("prd", "tick", PRD)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not ticked" in result.stderr and "uncommitted changes" in result.stderr
    assert _git(repo, "rev-parse", "main") == before
    assert (repo / PRD).read_text() == THROTTLING


def test_tick_needs_the_prd_on_the_target_branch(cli: Cli, repo: Path) -> None:
    (repo / "docs" / "prd" / "new.md").write_text(THROTTLING)
    assert_one_line_error(
        cli("prd", "tick", "docs/prd/new.md"), "not on branch main", "commit the PRD on main"
    )
