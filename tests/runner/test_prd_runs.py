"""A PRD's criteria run by real runners, as a user drives them with the `capataz`
command: `prd import`, a runner (on the database, or remote through `capataz serve`),
then the PRD on the target branch ticked by capataz as its tasks land, `prd status`
showing it, `prd tick` catching up on a tick that could not be made, and a result
touching the PRD's Out of Scope list escalated with OUT_OF_SCOPE."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli.test_task_cli import Cli
from tests.conftest import git
from tests.helpers import wait_for
from tests.runner.test_remote import Plane, serve_plane
from tests.runner.test_runner import _runner_process

from capataz.config import parse_config
from capataz.pipeline import prd_progress
from capataz.runner import Runner
from capataz.store import Store, TaskState
from capataz.workspace.landing import FileCommit
from capataz.workspace.repo import Repository

PRD = "docs/prd/report.md"
TEXT = """\
# PRD: Reports

## Acceptance Criteria

### AC1: Export the report
- [ ] CSV export
- [x] Already there

### AC2: Mail the report
- [ ] Mail it
- [ ] Say so

## Out of Scope
- Anything under `vendor/`
"""
# The agent reads which criterion it was given from its instruction: AC1 writes a file
# (into vendor/, out of scope, when the repository has one), AC2 changes nothing.
AGENT = (
    'case "$0" in *"criterion AC1 "*) '
    "if [ -d vendor ]; then echo x >> vendor/lib.txt; else echo csv > export.txt; fi;; esac"
)
CONFIG = f"""
[project]
escalation_timeout = "60s"

[agents.shell]
command = ["bash", "-c", {AGENT!r}, "{{instruction}}"]
timeout = "60s"
idle_timeout = "20s"

[runner]
lease = "60s"
heartbeat = "1s"
sweep_interval = "0.5s"
poll_interval = "0.2s"

[server]
rate_limit = 10000
rate_burst = 10000
"""
TICKED = TEXT.replace("- [ ] CSV export", "- [x] CSV export")


def cli(repo: Path, url: str) -> Cli:
    return Cli(repo, {**os.environ, "CAPATAZ_DATABASE_URL": url, "COLUMNS": "200"})


def assert_ticked_by_capataz(repo: Path, task_id: str) -> None:
    """AC1 ticked on main in a commit of its own after the agent's; AC2 untouched."""
    assert git(repo, "show", f"main:{PRD}") + "\n" == TICKED
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert subjects[0] == f"prd: tick AC1 in {PRD} (task {task_id} landed)"
    assert subjects[1].startswith("Reports: AC1 Export the report")  # the agent's result
    assert git(repo, "show", "--format=", "--name-only", "main").split() == [PRD]
    assert git(repo, "show", "--format=", "--name-only", "main~1").split() == ["export.txt"]


def test_a_landed_criterion_is_ticked_on_the_target_branch(
    make_repo: Callable[..., Path], queue_url: str
) -> None:
    repo = make_repo(config=CONFIG, files={PRD: TEXT})
    user = cli(repo, queue_url)
    ac1, ac2 = user.json("prd", "import", PRD)
    runner = _runner_process(repo, queue_url, "--exit-when-idle")
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode == 0, output[-3000:]
    assert_ticked_by_capataz(repo, ac1["id"])
    assert (repo / PRD).read_text() == TICKED  # the clean checkout moved with it
    rows = {row["ac"]: row for row in user.json("prd", "status", PRD)}
    assert (rows["AC1"]["status"], rows["AC1"]["checked"], rows["AC1"]["total"]) == ("done", 2, 2)
    # AC2's run changed nothing: done, but nothing landed, so nothing ticked.
    assert (rows["AC2"]["status"], rows["AC2"]["checked"], rows["AC2"]["total"]) == ("done", 0, 2)
    store = Store.open(queue_url)
    try:
        log = store.runs.get(store.runs.list(task_id=ac1["id"])[0].id).log_tail
        assert f"ticked AC1 in {PRD} on main" in log
        assert store.tasks.get(ac2["id"]).status is TaskState.DONE
    finally:
        store.close()


@pytest.fixture
def plane(make_repo: Callable[..., Path], tmp_path: Path) -> Iterator[Plane]:
    """`capataz serve` over SQLite (the claim's key is tested on both databases in
    tests/store; what this proves is the wire)."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    yield from serve_plane(make_repo, url, CONFIG, files={PRD: TEXT})


def test_a_remote_runner_ticks_the_criterion_too(plane: Plane) -> None:
    (ac1, _) = cli(plane.repo, plane.url).json("prd", "import", PRD)
    runner = plane.runner("--exit-when-idle")
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode == 0, output[-3000:]
    assert_ticked_by_capataz(plane.repo, ac1["id"])


def test_a_tick_that_cannot_be_made_is_pending_until_prd_tick(
    make_repo: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target branch's checkout turns dirty between the landing and the tick: the
    run stays landed and done, the tick is recorded as pending, `prd tick` makes it."""
    repo = make_repo(config=CONFIG, files={PRD: TEXT})
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    user = cli(repo, url)
    (ac1, _) = user.json("prd", "import", PRD)
    store = Store.open(url)
    try:
        runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
        real_tick = prd_progress.tick_on_branch

        def after_someone_edits(*args: Any) -> FileCommit | None:
            (repo / "README.md").write_text("edited while the run landed\n")
            return real_tick(*args)

        monkeypatch.setattr(prd_progress, "tick_on_branch", after_someone_edits)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        thread.join(timeout=180)
        assert not thread.is_alive(), "runner did not finish"
        assert store.tasks.get(ac1["id"]).status is TaskState.DONE
        run = store.runs.get(store.runs.list(task_id=ac1["id"])[0].id)
        assert f"warning: AC1 in {PRD} not ticked" in run.log_tail
        assert "uncommitted changes" in run.log_tail
    finally:
        store.close()
    assert "export.txt" in git(repo, "ls-tree", "--name-only", "main").split()  # landed
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")  # not ticked
    refused = user("prd", "tick", PRD)  # still dirty: `prd tick` says why, as the run did
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    git(repo, "checkout", "--", "README.md")
    # `prd tick` ticks every criterion whose task is done: AC2's too, whose run had
    # nothing to change (a run ticks only what it landed).
    assert "ticked AC1, AC2 on main" in user.ok("prd", "tick", PRD)
    assert git(repo, "show", f"main:{PRD}") + "\n" == TICKED.replace("- [ ] ", "- [x] ")


def test_a_result_touching_an_out_of_scope_path_is_escalated_naming_the_item(
    make_repo: Callable[..., Path], queue_url: str
) -> None:
    repo = make_repo(config=CONFIG, files={PRD: TEXT, "vendor/lib.txt": "v\n"})
    (ac1, _) = cli(repo, queue_url).json("prd", "import", PRD)
    store = Store.open(queue_url)
    try:
        runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        wait_for(
            lambda: store.tasks.get(ac1["id"]).status is TaskState.ESCALATED, "AC1 is escalated"
        )
        (asked,) = store.escalations.list()
        found = [v for v in asked["details"]["violations"] if v["type"] == "OUT_OF_SCOPE"]
        assert [(v["severity"], v["file"]) for v in found] == [("medium", "vendor/lib.txt")]
        assert "'Anything under `vendor/`'" in found[0]["details"]
        store.escalations.answer(ac1["id"], "abort", note="out of scope", decided_by="ops")
        thread.join(timeout=120)
        assert not thread.is_alive(), "runner did not finish"
        assert store.tasks.get(ac1["id"]).status is TaskState.CANCELLED
    finally:
        store.close()
    assert "- [ ] CSV export" in git(repo, "show", f"main:{PRD}")
