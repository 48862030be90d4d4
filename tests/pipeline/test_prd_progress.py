"""A PRD task's run and its PRD, through the real supervisor (real git, real sandbox):
the criterion ticked as capataz's own commit once the result lands (only then), a tick
that cannot be made recorded without un-landing anything, and the out-of-scope check
reading the PRD at the base commit."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import wait_for
from tests.pipeline.test_pipeline import BASE_CONFIG

from capataz.config import parse_config
from capataz.models import Outcome, Severity, ViolationType
from capataz.pipeline.escalation import submit_decision
from capataz.pipeline.interface import Event
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.supervisor import RunReport, RunSpec, Supervisor
from capataz.prd.branch import CriterionRef
from capataz.workspace.repo import Repository

PRD = "docs/prd/x.md"
TEXT = """\
# PRD: Feature X

## Acceptance Criteria

### AC1: Export the report
- [ ] CSV export
- [x] Already there

### AC2: Mail the report
- [ ] Mail it

## Out of Scope
- Touching `vendor/` or `*.lock` files
- The `legacy_api` module
- Dark mode
"""
CONFIG = BASE_CONFIG.replace('forbidden_paths = ["legacy/**"]', "forbidden_paths = []")


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo(files={PRD: TEXT, "vendor/keep.txt": "v\n"})


def run(
    repo_path: Path,
    instruction: str,
    *,
    ac: str = "AC1",
    config: str = CONFIG,
    on: Callable[[Event], None] | None = None,
) -> RunReport:
    return Supervisor(
        Repository.discover(repo_path), parse_config(config), listener=on or (lambda event: None)
    ).execute(
        RunSpec(task_id="t1", instruction=instruction, agent="shell", prd=CriterionRef(PRD, ac))
    )


def progress(report: RunReport) -> dict[str, object]:
    assert report.progress_dir is not None
    data: dict[str, object] = json.loads((report.progress_dir / "progress.json").read_text())
    return data


def test_a_landed_result_ticks_its_criterion_as_a_commit_of_its_own(repo: Path) -> None:
    report = run(repo, "echo csv > export.py")
    assert report.outcome is Outcome.LANDED, report.message
    ticked = TEXT.replace("- [ ] CSV export", "- [x] CSV export")
    assert git(repo, "show", f"main:{PRD}") + "\n" == ticked  # AC2 untouched, byte for byte
    assert (repo / PRD).read_text() == ticked  # the clean checkout moved with it
    subjects = git(repo, "log", "--format=%s", "-2", "main").splitlines()
    assert subjects[0] == f"prd: tick AC1 in {PRD} (task t1 landed)"
    assert git(repo, "rev-parse", "main~1") == report.landed_commit  # the agent's, then the tick
    assert git(repo, "show", "--format=", "--name-only", "main").split() == [PRD]
    tick = progress(report)["prdTick"]
    assert isinstance(tick, dict)
    assert tick["commit"] == git(repo, "rev-parse", "main") and tick["pending"] is None
    assert progress(report)["prd"] == f"prd:{PRD}#AC1"
    assert "ticked AC1" in (report.progress_dir / "artifacts" / "run.log").read_text()  # type: ignore[operator]


def test_no_changes_are_not_ticked(repo: Path) -> None:
    before = git(repo, "rev-parse", "main")
    report = run(repo, "true")
    assert report.outcome is Outcome.NO_CHANGES
    assert git(repo, "rev-parse", "main") == before
    assert "prdTick" not in progress(report)


def test_a_result_kept_on_a_branch_is_not_ticked(repo: Path) -> None:
    report = run(
        repo,
        "echo csv > export.py",
        config=CONFIG.replace("[project]\n", '[project]\nland = "branch"\n'),
    )
    assert report.outcome is Outcome.BRANCH, report.message
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")
    assert "prdTick" not in progress(report)


def test_a_dirty_checkout_leaves_the_tick_pending_and_the_run_landed(repo: Path) -> None:
    def dirty(event: Event) -> None:  # someone edits the checkout right after the landing
        if event.kind == "step" and event.name == "finalize" and event.status == "finished":
            (repo / "README.md").write_text("edited\n")

    seen: list[str] = []

    def listen(event: Event) -> None:
        dirty(event)
        if event.kind == "output" and event.line is not None:
            seen.append(event.line.text)

    report = run(repo, "echo csv > export.py", on=listen)
    assert report.outcome is Outcome.LANDED, report.message
    assert git(repo, "rev-parse", "main") == report.landed_commit  # landed, not ticked
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")
    tick = progress(report)["prdTick"]
    assert isinstance(tick, dict)
    assert tick["commit"] is None and "uncommitted changes" in tick["pending"]
    assert f"capataz prd tick {PRD}" in report.message
    assert any(line.startswith("warning: AC1 in docs/prd/x.md not ticked") for line in seen)


def test_a_prd_gone_from_the_branch_leaves_the_tick_pending(repo: Path) -> None:
    report = run(repo, f"rm {PRD} && echo csv > export.py")
    assert report.outcome is Outcome.LANDED, report.message
    tick = progress(report)["prdTick"]
    assert isinstance(tick, dict)
    assert "not on branch main" in tick["pending"]


def test_an_out_of_scope_path_escalates_naming_the_item(repo: Path) -> None:
    report = run(
        repo,
        "echo x >> vendor/keep.txt",
        config=CONFIG.replace('escalation_timeout = "20s"', 'escalation_timeout = "1s"'),
    )
    found = [v for v in report.violations if v.type is ViolationType.OUT_OF_SCOPE]
    assert [(v.severity, v.file) for v in found] == [(Severity.MEDIUM, "vendor/keep.txt")]
    assert "Touching `vendor/` or `*.lock` files" in found[0].details
    assert report.outcome is Outcome.ABORTED  # nobody answered the escalation in time
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")


def test_an_out_of_scope_word_and_the_prd_at_the_base_commit(repo: Path) -> None:
    """The agent cannot take an item off the list by editing the PRD in its tree."""
    config = CONFIG + '\n[prd]\nout_of_scope = "high"\n'
    report = run(
        repo, f"sed -i '/legacy_api/d' {PRD} && echo 'import legacy_api' > a.py", config=config
    )
    found = [v for v in report.violations if v.type is ViolationType.OUT_OF_SCOPE]
    assert [(v.severity, v.file, v.line) for v in found] == [(Severity.HIGH, "a.py", 1)]
    assert "legacy_api" in found[0].details
    assert report.outcome is Outcome.BLOCKED
    assert "prdTick" not in progress(report)
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")


def test_a_resumed_run_ticks_its_criterion_when_it_lands(repo: Path) -> None:
    """Answered `modify`, edited by a human, resumed: the criterion is known from
    progress.json and ticked once the result lands."""
    config = parse_config(CONFIG)
    progress_dir = ProgressDir(repo / config.project.progress_dir, "t1")

    def reviewer() -> None:
        wait_for((progress_dir.path / "escalation.json").exists, "the run asks a human")
        submit_decision(progress_dir, "modify", decided_by="test")

    threading.Thread(target=reviewer, daemon=True).start()
    first = run(repo, "echo x >> vendor/keep.txt")
    assert first.outcome is Outcome.AWAITING_HUMAN
    tree = repo / ".capataz" / "workspaces" / "t1" / "tree"
    (tree / "vendor" / "keep.txt").write_text("v\n")  # the human takes it out again
    (tree / "export.py").write_text("csv\n")
    report = Supervisor(Repository.discover(repo), config).resume("t1")
    assert report.outcome is Outcome.LANDED, report.message
    assert git(repo, "show", f"main:{PRD}") + "\n" == TEXT.replace("- [ ] CSV", "- [x] CSV")


def test_a_criterion_asking_for_an_item_is_out_of_scope(make_repo: Callable[..., Path]) -> None:
    text = TEXT.replace("- [ ] Mail it", "- [ ] Mail it, in DARK MODE")
    repo = make_repo(files={PRD: text})
    report = run(
        repo, "echo x > mail.py", ac="AC2", config=CONFIG + '\n[prd]\nout_of_scope = "low"\n'
    )
    found = [v for v in report.violations if v.type is ViolationType.OUT_OF_SCOPE]
    assert len(found) == 1 and "'Dark mode'" in found[0].details and found[0].file is None
    assert report.outcome is Outcome.LANDED  # low: a warning


def test_the_check_can_be_off(repo: Path) -> None:
    config = CONFIG + '\n[prd]\nout_of_scope = "off"\n'
    report = run(repo, "echo x >> vendor/keep.txt", config=config)
    assert report.outcome is Outcome.LANDED
    assert not [v for v in report.violations if v.type is ViolationType.OUT_OF_SCOPE]
