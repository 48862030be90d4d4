from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from capataz.errors import EscalationError
from capataz.models import EscalationChoice, Severity, Violation, ViolationType, utcnow
from capataz.pipeline.escalation import (
    close_escalation,
    open_escalation,
    submit_decision,
    wait_for_answer,
)
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.progress_state import ProgressState


def _state(task_id: str) -> ProgressState:
    """The least a run writes when it starts."""
    now = utcnow()
    return ProgressState(
        task_id=task_id,
        title="",
        description="",
        instruction="true",
        agent="shell",
        allow_high=None,
        status="pending",
        current_phase="prepare",
        created_at=now,
        started_at=now,
        completed_at=None,
        base_commit="0" * 40,
        target_branch="main",
        sandbox="none",
    )


@pytest.fixture
def progress(tmp_path: Path) -> ProgressDir:
    p = ProgressDir(tmp_path / "progress", "t1")
    p.reset(_state("t1"))
    open_escalation(
        p,
        reason="1 medium violation",
        timeout=60,
        workspace=tmp_path / "ws",
        changes=[],
        violations=[
            Violation(
                type=ViolationType.TOO_MANY_FILES,
                severity=Severity.MEDIUM,
                details="5 files changed; the limit is 3",
            )
        ],
    )
    return p


def test_opening_writes_the_record_and_instructions(progress: ProgressDir) -> None:
    record = json.loads((progress.path / "escalation.json").read_text())
    assert record["status"] == "open" and record["options"] == [
        "approve",
        "reject",
        "modify",
        "abort",
    ]
    text = (progress.path / "ESCALATION-INSTRUCTIONS.txt").read_text()
    assert "capataz decide t1 approve" in text and "TOO_MANY_FILES" in text


def test_decide_from_another_process_answers_through_the_file(progress: ProgressDir) -> None:
    timer = threading.Timer(
        0.3, lambda: submit_decision(progress, "Approve", note="ok", decided_by="ana")
    )
    timer.start()
    answer = wait_for_answer(progress, timeout=10)
    assert (answer.choice, answer.source, answer.note, answer.decided_by) == (
        EscalationChoice.APPROVE,
        "file",
        "ok",
        "ana",
    )


def test_timeout_answers_abort(progress: ProgressDir) -> None:
    answer = wait_for_answer(progress, timeout=0.3, poll=0.05)
    assert answer.choice is EscalationChoice.ABORT and answer.source == "timeout"


def test_terminal_answer(progress: ProgressDir) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as terminal:
        os.write(write_fd, b"maybe\nreject\n")
        answer = wait_for_answer(progress, timeout=5, terminal=terminal, poll=0.05)
    os.close(write_fd)
    assert answer.choice is EscalationChoice.REJECT and answer.source == "terminal"


def test_hand_written_invalid_file_is_set_aside_not_obeyed(progress: ProgressDir) -> None:
    (progress.path / "escalation-decision.json").write_text('{"decision": "yolo"}')
    answer = wait_for_answer(progress, timeout=0.3, poll=0.05)
    assert answer.choice is EscalationChoice.ABORT  # the timeout, not the bad file
    assert (progress.path / "escalation-decision.invalid.json").exists()
    assert "expected" in (progress.path / "escalation-decision.invalid.txt").read_text()


def test_submit_rejects_bad_choices_and_closed_or_missing_escalations(
    progress: ProgressDir, tmp_path: Path
) -> None:
    with pytest.raises(EscalationError, match="'ship it' is not a decision"):
        submit_decision(progress, "ship it")
    close_escalation(progress, wait_for_answer(progress, timeout=0.05, poll=0.01))
    with pytest.raises(EscalationError, match="already answered"):
        submit_decision(progress, "approve")
    other = ProgressDir(tmp_path / "progress", "t2")
    other.reset(_state("t2"))
    with pytest.raises(EscalationError, match="has no escalation"):
        submit_decision(other, "approve")
