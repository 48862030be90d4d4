"""The supervised pipeline end to end: real git, real bubblewrap, every decision path."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git, snapshot
from tests.helpers import wait_for

from capataz.config import parse_config
from capataz.errors import UnknownAgentError
from capataz.models import Decision, EscalationChoice, Outcome, ViolationType
from capataz.pipeline.escalation import Answer, submit_decision
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.supervisor import RunHooks, RunReport, RunSpec, Supervisor
from capataz.sandbox.base import ExecOutcome
from capataz.workspace.repo import Repository

BASE_CONFIG = """
[project]
escalation_timeout = "20s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "30s"
idle_timeout = "20s"  # a silent agent on a loaded machine is not a hang
memory = "1GiB"
processes = 64

[policy]
forbidden_paths = ["legacy/**"]
forbidden_tokens = ['api_key\\s*=']
max_changed_files = 3
"""

REJECTED_STORE = ("--git-dir", ".capataz/rejected.git")  # rejected results live here


def run_task(
    repo_path: Path,
    instruction: str,
    *,
    task_id: str = "t1",
    config: str = BASE_CONFIG,
    answer: str | None = None,
    allow_high: bool | None = None,
) -> RunReport:
    repo = Repository.discover(repo_path)
    parsed = parse_config(config)
    if answer is not None:
        progress = ProgressDir(repo.root / parsed.project.progress_dir, task_id)

        def reviewer() -> None:  # answers once asked, however long the run takes to ask
            wait_for((progress.path / "escalation.json").exists, "the run asks a human")
            submit_decision(progress, answer, decided_by="test")

        threading.Thread(target=reviewer, daemon=True).start()
    return Supervisor(repo, parsed).execute(
        RunSpec(task_id=task_id, instruction=instruction, agent="shell", allow_high=allow_high)
    )


def decisions(report: RunReport) -> list[tuple[str, str]]:
    assert report.progress_dir is not None
    lines = (report.progress_dir / "decisions.jsonl").read_text().splitlines()
    return [(d["phase"], d["decision"]) for d in map(json.loads, lines)]


@pytest.fixture
def user_repo(make_repo: Callable[..., Path]) -> Path:
    """A user mid-work: on a feature branch with uncommitted and untracked files and a stash."""
    repo = make_repo(files={"app.py": "print('v1')\n", "legacy/billing.py": "# old\n"})
    (repo / "app.py").write_text("print('stashed')\n")
    git(repo, "stash", "--quiet")
    git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "app.py").write_text("print('work in progress')\n")
    (repo / "untracked.txt").write_text("mine\n")
    return repo


def test_a_good_change_lands_and_leaves_evidence(user_repo: Path) -> None:
    before = snapshot(user_repo)
    report = run_task(user_repo, "echo 'print(1)' > hello.py && echo wrote hello.py")
    assert report.outcome is Outcome.LANDED
    assert git(user_repo, "show", "main:hello.py") == "print(1)"
    assert git(user_repo, "rev-parse", "main") == report.landed_commit
    after = snapshot(user_repo)
    assert {k: v for k, v in after.items() if k != "<refs>"} == {
        k: v for k, v in before.items() if k != "<refs>"
    }
    assert decisions(report) == [
        ("pre-task", "CONTINUE"),
        ("post-task", "CONTINUE"),
        ("completion", "COMPLETED"),
    ]
    progress = json.loads((report.progress_dir / "progress.json").read_text())  # type: ignore[operator]
    assert progress["status"] == "completed" and progress["metrics"]["filesCreated"] == 1
    assert [s["phase"] for s in progress["steps"]] == [
        "prepare",
        "pre-gates",
        "execute",
        "collect",
        "post-gates",
        "finalize",
    ]
    log = (report.progress_dir / "artifacts" / "run.log").read_text()  # type: ignore[operator]
    assert "[agent:out] wrote hello.py" in log and log[:4].isdigit()
    for name in ("pre-task-report.json", "post-task-report.json"):
        assert (report.progress_dir / "artifacts" / name).exists()  # type: ignore[operator]
    assert report.agent is not None and report.agent.exit_code == 0


@pytest.mark.parametrize(
    ("instruction", "violation"),
    [
        ("echo x >> legacy/billing.py", ViolationType.FORBIDDEN_PATH),
        ("echo 'api_key = 1' > conf.py", ViolationType.FORBIDDEN_TOKEN),
        ("echo start; sleep 60", ViolationType.AGENT_HUNG),
        ("echo partial > part.txt; exit 3", ViolationType.AGENT_FAILED),
        ("echo x > bg.txt; (sleep 300 &); sleep 0.2", ViolationType.AGENT_LEFT_PROCESSES),
    ],
)
def test_blocked_changes_roll_back_and_never_touch_the_user(
    user_repo: Path, instruction: str, violation: ViolationType
) -> None:
    before = snapshot(user_repo)
    main = git(user_repo, "rev-parse", "main")
    hangs = violation is ViolationType.AGENT_HUNG  # silent after "start": hung at 2 s
    config = BASE_CONFIG.replace('idle_timeout = "20s"', 'idle_timeout = "2s"') if hangs else None
    report = run_task(user_repo, instruction, config=config or BASE_CONFIG)
    assert report.outcome is Outcome.BLOCKED, report.reason
    assert violation in {v.type for v in report.violations}
    assert snapshot(user_repo) == before
    assert git(user_repo, "rev-parse", "main") == main
    assert ("rollback", "ROLLED_BACK") in decisions(report)
    state = json.loads((report.progress_dir / "artifacts" / "rollback-state.json").read_text())  # type: ignore[operator]
    assert state["originalCommit"] == main
    if report.result_commit:
        assert (
            git(user_repo, *REJECTED_STORE, "rev-parse", "refs/capataz/rejected/t1/1")
            == report.result_commit
        )
    assert not (user_repo / ".capataz" / "workspaces" / "t1").exists()


def test_pre_gate_failure_blocks_before_the_agent_runs(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo_path = make_repo()
    config = BASE_CONFIG + '\n[[gates]]\nname = "base-ok"\nphase = "pre"\nrun = "test -f MISSING"\n'
    report = run_task(repo_path, "echo ran > ran.txt", config=config)
    assert report.outcome is Outcome.BLOCKED and report.agent is None
    assert decisions(report)[0] == ("pre-task", "BLOCK")
    assert report.violations[0].gate == "base-ok"


def test_post_gate_severity_decides(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    gate = '\n[[gates]]\nname = "tests"\nrun = "echo failing test; exit 1"\nseverity = "{}"\n'
    blocked = run_task(repo_path, "echo a > a.txt", config=BASE_CONFIG + gate.format("critical"))
    assert blocked.outcome is Outcome.BLOCKED
    assert "failing test" in blocked.violations[0].details
    warned = run_task(
        repo_path, "echo b > b.txt", task_id="t2", config=BASE_CONFIG + gate.format("low")
    )
    assert warned.outcome is Outcome.LANDED and "warning" in warned.reason


def test_gate_debris_never_lands(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    gate = '\n[[gates]]\nname = "writes-cache"\nrun = "mkdir -p .cache && echo x > .cache/junk"\n'
    report = run_task(repo_path, "echo a > a.txt", config=BASE_CONFIG + gate)
    assert report.outcome is Outcome.LANDED
    assert git(repo_path, "ls-tree", "-r", "--name-only", "main").splitlines() == [
        ".gitignore",
        "README.md",
        "a.txt",
    ]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [("approve", Outcome.LANDED), ("reject", Outcome.REJECTED), ("abort", Outcome.ABORTED)],
)
def test_escalation_answers(make_repo: Callable[..., Path], answer: str, outcome: Outcome) -> None:
    repo_path = make_repo()
    main = git(repo_path, "rev-parse", "main")
    report = run_task(repo_path, "for i in 1 2 3 4 5; do echo $i > f$i.txt; done", answer=answer)
    assert report.outcome is outcome
    assert ("post-task", "ESCALATE") in decisions(report)
    escalation = json.loads((report.progress_dir / "escalation.json").read_text())  # type: ignore[operator]
    assert escalation["status"] == "answered" and escalation["answer"]["decision"] == answer
    landed = git(repo_path, "rev-parse", "main") != main
    assert landed is (outcome is Outcome.LANDED)


def test_escalation_timeout_aborts(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    config = BASE_CONFIG.replace('escalation_timeout = "20s"', 'escalation_timeout = "1s"')
    report = run_task(repo_path, "for i in 1 2 3 4 5; do echo $i > f$i.txt; done", config=config)
    assert report.outcome is Outcome.ABORTED and "timeout" in report.reason


def test_high_violation_escalates_only_when_allowed(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    report = run_task(repo_path, "echo x > x.txt; exit 1", allow_high=True, answer="approve")
    assert report.outcome is Outcome.LANDED
    assert ("post-task", "ESCALATE") in decisions(report)


def test_the_report_files_say_what_was_decided(make_repo: Callable[..., Path]) -> None:
    """A high violation on a task that allows high ones escalates: the post-task report
    must say ESCALATE too, not what the same violations would mean without the allowance."""
    repo_path = make_repo()
    report = run_task(repo_path, "echo 'api_key = 1' > k.py", allow_high=True, answer="approve")
    assert report.outcome is Outcome.LANDED
    assert ("post-task", "ESCALATE") in decisions(report)
    assert report.progress_dir is not None
    post = json.loads((report.progress_dir / "artifacts" / "post-task-report.json").read_text())
    assert post["status"] == "ESCALATE"
    state = json.loads((report.progress_dir / "progress.json").read_text())
    assert state["status"] == "completed"


def test_modify_then_resume(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    report = run_task(repo_path, "for i in 1 2 3 4 5; do echo $i > f$i.txt; done", answer="modify")
    assert report.outcome is Outcome.AWAITING_HUMAN and report.decision is Decision.ESCALATE
    tree = repo_path / ".capataz" / "workspaces" / "t1" / "tree"
    for i in (3, 4, 5):
        (tree / f"f{i}.txt").unlink()  # the human trims the change under the limit
    resumed = Supervisor(Repository.discover(repo_path), parse_config(BASE_CONFIG)).resume("t1")
    assert resumed.outcome is Outcome.LANDED
    assert git(repo_path, "ls-tree", "--name-only", "main").splitlines() == [
        ".gitignore",
        "README.md",
        "f1.txt",
        "f2.txt",
    ]


def test_rerunning_a_task_id_overwrites_its_progress(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    run_task(repo_path, "echo x >> legacy.txt; exit 1")
    second = run_task(repo_path, "echo y > y.txt")
    assert second.outcome is Outcome.LANDED
    assert decisions(second) == [
        ("pre-task", "CONTINUE"),
        ("post-task", "CONTINUE"),
        ("completion", "COMPLETED"),
    ]
    assert (second.progress_dir / "violations.jsonl").read_text() == ""  # type: ignore[operator]


def test_no_changes_is_reported_not_landed(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    report = run_task(repo_path, "echo just looking")
    assert report.outcome is Outcome.NO_CHANGES


def test_unknown_agent_fails_before_anything_is_written(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    repo = Repository.discover(repo_path)
    with pytest.raises(UnknownAgentError, match="known agents: shell"):
        Supervisor(repo, parse_config(BASE_CONFIG)).execute(RunSpec("t1", "x", agent="gpt"))
    assert not (repo_path / ".capataz").exists()


def _supervisor(repo_path: Path, hooks: RunHooks) -> Supervisor:
    return Supervisor(Repository.discover(repo_path), parse_config(BASE_CONFIG), hooks=hooks)


def test_stop_hook_kills_the_agent_and_rolls_back(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    main = git(repo_path, "rev-parse", "main")
    # Stop once the agent has written: it would go on until its timeout otherwise.
    written = repo_path / ".capataz" / "workspaces"
    hooks = RunHooks(should_stop=lambda: any(written.glob("t1*/tree/a.txt")))
    report = _supervisor(repo_path, hooks).execute(
        RunSpec("t1", "while true; do echo tick > a.txt; echo tick; sleep 0.2; done", agent="shell")
    )
    assert report.outcome is Outcome.CANCELLED
    assert report.agent is not None and report.agent.outcome is ExecOutcome.CANCELLED
    assert git(repo_path, "rev-parse", "main") == main


def test_lost_lease_never_lands(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    main = git(repo_path, "rev-parse", "main")
    report = _supervisor(repo_path, RunHooks(may_land=lambda: False)).execute(
        RunSpec("t1", "echo a > a.txt", agent="shell")
    )
    assert report.outcome is Outcome.CANCELLED and "no longer owns" in report.reason
    assert git(repo_path, "rev-parse", "main") == main
    assert (
        git(repo_path, *REJECTED_STORE, "rev-parse", "refs/capataz/rejected/t1/1")
        == report.result_commit
    )


def test_escalation_answered_through_the_hook(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    hooks = RunHooks(answers=lambda: Answer(EscalationChoice.APPROVE, "database", decided_by="ops"))
    report = _supervisor(repo_path, hooks).execute(RunSpec("t1", "touch a b c d", agent="shell"))
    assert report.outcome is Outcome.LANDED and "via database" in report.reason


def test_state_dir_ignores_itself_even_without_init(make_repo: Callable[..., Path]) -> None:
    repo_path = make_repo()
    (repo_path / ".gitignore").write_text("")  # no .capataz/ rule
    git(repo_path, "commit", "--quiet", "-am", "no ignore rule")
    report = run_task(repo_path, "echo a > a.txt")
    assert report.outcome is Outcome.LANDED  # the checked-out tree stayed clean for landing
    assert git(repo_path, "status", "--porcelain") == ""
