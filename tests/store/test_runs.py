"""Run records: steps, the bounded log tail, details reported with complete, and
reading runs back, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capataz.errors import TaskError
from capataz.store import ClaimedTask, RunDetails, RunStatus, Store, TaskState
from capataz.store._run_sql import LOG_TAIL_CHARS

from .conftest import Clock

DETAILS = RunDetails(
    outcome="landed",
    exit_code=0,
    wall_seconds=1.5,
    cpu_seconds=0.25,
    peak_memory_bytes=10_000_000,
    result_commit="abc123",
    landed_commit="def456",
    file_changes=[
        {"path": "src/a.py", "kind": "modified", "lines_added": 3, "lines_removed": 1},
        {"path": "logo.png", "kind": "added", "binary": True},
    ],
    violations=[
        {
            "type": "TOO_MANY_LINES",
            "severity": "low",
            "file": "src/a.py",
            "line": 7,
            "details": "diff is long",
            "suggestion": "split it",
            "gate": "policy",
            "phase": "post",
        }
    ],
    decisions=[
        {
            "phase": "post",
            "decision": "CONTINUE",
            "reason": "low only",
            "timestamp": "2026-01-02T03:04:05+00:00",
        }
    ],
)


def _claim(store: Store, task_id: str = "a") -> ClaimedTask:
    store.tasks.add(task_id, "x", id=task_id)
    claimed = store.leases.claim("runner-1")
    assert claimed is not None
    return claimed


def test_steps_record_each_phase_in_order(store: Store, clock: Clock) -> None:
    claimed = _claim(store)
    store.runs.step_started(claimed.run_id, "prepare")
    clock.advance(1)
    store.runs.step_finished(claimed.run_id, "prepare", "ok")
    store.runs.step_started(claimed.run_id, "execute")
    store.runs.step_started(claimed.run_id, "execute")  # a retried phase: the newest finishes
    store.runs.step_finished(claimed.run_id, "execute", "exit 0")
    store.runs.step_finished(claimed.run_id, "post-gates", "passed")  # never started
    steps = store.runs.get(claimed.run_id).steps
    assert [(s.phase, s.outcome) for s in steps] == [
        ("prepare", "ok"),
        ("execute", None),
        ("execute", "exit 0"),
        ("post-gates", "passed"),
    ]
    prepare = steps[0]
    assert prepare.ended_at is not None
    assert (prepare.ended_at - prepare.started_at).total_seconds() >= 1
    assert steps[1].ended_at is None
    assert steps[3].started_at == steps[3].ended_at


def test_the_log_keeps_only_its_last_64_ki_characters(store: Store) -> None:
    claimed = _claim(store)
    store.runs.append_log(claimed.run_id, "first line\n")
    store.runs.append_log(claimed.run_id, "")
    store.runs.append_log(claimed.run_id, "second line\n")
    assert store.runs.get(claimed.run_id).log_tail == "first line\nsecond line\n"
    line = "0123456789abcdef" * 63 + "\n"  # 1,009 characters
    for _ in range(70):
        store.runs.append_log(claimed.run_id, line)
    store.runs.append_log(claimed.run_id, "the end\n")
    tail = store.runs.get(claimed.run_id).log_tail
    assert len(tail) == LOG_TAIL_CHARS == 65_536
    assert tail.endswith(line + "the end\n")
    store.runs.append_log(claimed.run_id, "z" * 100_000)
    assert store.runs.get(claimed.run_id).log_tail == "z" * LOG_TAIL_CHARS


def test_complete_with_details_records_them_with_the_run(store: Store) -> None:
    claimed = _claim(store)
    assert store.leases.complete("a", claimed.fencing_token, "done", "landed", details=DETAILS)
    run = store.runs.get(claimed.run_id)
    assert (run.lifecycle, run.outcome, run.result) == (RunStatus.FINISHED, "done", "landed")
    assert run.status == "succeeded"
    assert (run.exit_code, run.wall_seconds, run.cpu_seconds) == (0, 1.5, 0.25)
    assert run.peak_memory_bytes == 10_000_000
    assert (run.result_commit, run.landed_commit) == ("abc123", "def456")
    assert (run.task_id, run.task_title, run.attempt, run.runner_id) == ("a", "a", 1, "runner-1")
    assert run.file_changes == [
        {
            "path": "src/a.py",
            "kind": "modified",
            "lines_added": 3,
            "lines_removed": 1,
            "binary": False,
        },
        {"path": "logo.png", "kind": "added", "lines_added": 0, "lines_removed": 0, "binary": True},
    ]
    assert run.violations == DETAILS.violations
    assert run.decisions == [
        {
            "phase": "post",
            "decision": "CONTINUE",
            "reason": "low only",
            "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    ]


def test_a_stale_token_writes_no_run_details(store: Store, clock: Clock) -> None:
    claimed = _claim(store)
    clock.advance(31)
    assert store.sweep() == ["a"]
    assert not store.leases.complete("a", claimed.fencing_token, "done", details=DETAILS)
    run = store.runs.get(claimed.run_id)
    assert (run.status, run.result, run.exit_code, run.result_commit) == (
        RunStatus.LOST,
        None,
        None,
        None,
    )
    assert (run.file_changes, run.violations, run.decisions) == ([], [], [])


def test_bad_details_are_refused_before_anything_is_written(store: Store) -> None:
    claimed = _claim(store)
    bad = RunDetails(outcome="landed", violations=[{"severity": "high"}])
    with pytest.raises(TaskError, match="violation in the run details has no 'type'"):
        store.leases.complete("a", claimed.fencing_token, "done", details=bad)
    assert store.tasks.get("a").status is TaskState.RUNNING
    assert store.runs.get(claimed.run_id).status == RunStatus.RUNNING


def test_list_runs_newest_first_filtered_and_paged(store: Store, clock: Clock) -> None:
    store.tasks.add("a", "x", id="a", max_attempts=3)
    store.tasks.add("b", "x", id="b")
    first = store.leases.claim("runner-1")
    assert first is not None
    assert store.leases.complete(first.id, first.fencing_token, "failed", "exit 1")
    clock.advance(10)
    second = store.leases.claim("runner-1")
    assert second is not None
    clock.advance(10)
    third = store.leases.claim("runner-1")
    assert third is not None
    assert [r.id for r in store.runs.list()] == [third.run_id, second.run_id, first.run_id]
    assert (first.id, second.id, third.id) == ("a", "a", "b")
    assert [r.id for r in store.runs.list(task_id="a")] == [second.run_id, first.run_id]
    assert [r.id for r in store.runs.list(status="finished")] == [first.run_id]
    assert [r.id for r in store.runs.list(status="failed")] == [first.run_id]
    assert [r.id for r in store.runs.list(status="running")] == [third.run_id, second.run_id]
    assert store.runs.count(status="failed") == 1 and store.runs.count(status="succeeded") == 0
    assert [r.id for r in store.runs.list(limit=1, offset=1)] == [second.run_id]
    assert store.runs.list(task_id="nope") == []
    with pytest.raises(TaskError, match="no run status 'bogus'"):
        store.runs.list(status="bogus")


def test_unknown_run_ids_are_errors_with_a_fix(store: Store) -> None:
    for call in (
        lambda: store.runs.get("run-nope"),
        lambda: store.runs.step_started("run-nope", "prepare"),
        lambda: store.runs.step_finished("run-nope", "prepare", "ok"),
        lambda: store.runs.append_log("run-nope", "text"),
    ):
        with pytest.raises(TaskError, match="no run run-nope") as caught:
            call()
        assert caught.value.fix
