"""Escalation: a run that needs a human waits here for approve / reject / modify / abort.

An answer may come from the terminal (when stdin is a tty), from an
``escalation-decision.json`` file (written by hand, by `capataz decide` from another
shell, or later by the API), or from the clock: the timeout answers ``abort`` so an
unattended run never waits forever."""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from capataz.errors import EscalationError
from capataz.models import EscalationChoice, FileChange, Violation, utcnow
from capataz.pipeline.progress import ProgressDir
from capataz.redaction import redact
from capataz.statedir import write_json_atomic

__all__ = ["Answer", "open_escalation", "submit_decision", "wait_for_answer"]

DECISION_FILE = "escalation-decision.json"
CHOICES = ", ".join(c.value for c in EscalationChoice)


@dataclass(frozen=True)
class Answer:
    choice: EscalationChoice
    source: str  # "terminal", "file", "timeout"
    note: str = ""
    decided_by: str = ""


def open_escalation(
    progress: ProgressDir,
    *,
    reason: str,
    violations: Sequence[Violation],
    changes: Sequence[FileChange],
    timeout: float,
    workspace: Path,
) -> dict[str, Any]:
    opened = utcnow()
    task_id = progress.path.name
    record = {
        "taskId": task_id,
        "status": "open",
        "reason": reason,
        "openedAt": opened.isoformat(),
        "timeoutAt": (opened + timedelta(seconds=timeout)).isoformat(),
        "options": [c.value for c in EscalationChoice],
        "violations": [v.model_dump(mode="json") for v in violations],
        "fileChanges": [c.model_dump(mode="json") for c in changes],
        "workspace": str(workspace),
    }
    (progress.path / DECISION_FILE).unlink(missing_ok=True)
    write_json_atomic(progress.path / "escalation.json", record)
    lines = [
        f"Task {task_id} needs a human decision.",
        f"Why: {reason}",
        "",
        "Violations:",
        *(f"  - [{v.severity.value}] {v.type.value} {_where(v)} — {v.details}" for v in violations),
        "",
        f"The agent's result is in {workspace} (diff against the base with `git diff HEAD~1`).",
        "",
        "Answer with one of:",
        f"  capataz decide {task_id} approve   # land it despite the violations",
        f"  capataz decide {task_id} reject    # roll it back",
        f"  capataz decide {task_id} modify    # keep the workspace for your edits,",
        f"                                    # then `capataz resume {task_id}`",
        f"  capataz decide {task_id} abort     # roll back and stop",
        f'or write {progress.path / DECISION_FILE} as {{"decision": "approve", "note": "..."}}.',
        f"Without an answer by {record['timeoutAt']} the task is aborted.",
    ]
    (progress.path / "ESCALATION-INSTRUCTIONS.txt").write_text(
        redact("\n".join(lines)) + "\n", encoding="utf-8"
    )
    return record


def _where(violation: Violation) -> str:
    if violation.file and violation.line:
        return f"{violation.file}:{violation.line}"
    return violation.file or violation.gate


def submit_decision(
    progress: ProgressDir, choice: str, *, note: str = "", decided_by: str = "cli"
) -> None:
    """Answer an open escalation from another process (what `capataz decide` calls)."""
    parsed = parse_choice(choice)
    escalation = progress.path / "escalation.json"
    if not escalation.is_file():
        raise EscalationError(
            f"task {progress.path.name!r} has no escalation",
            fix="check the task id; only an escalated task takes a decision",
        )
    state = json.loads(escalation.read_text(encoding="utf-8"))
    if state.get("status") != "open":
        raise EscalationError(
            f"the escalation of task {progress.path.name!r} is already {state.get('status')}",
            fix="nothing to do; see progress.json for the outcome",
        )
    write_json_atomic(
        progress.path / DECISION_FILE,
        {
            "decision": parsed.value,
            "note": note,
            "decidedBy": decided_by,
            "timestamp": utcnow().isoformat(),
        },
    )


def parse_choice(choice: str) -> EscalationChoice:
    try:
        return EscalationChoice(choice.strip().lower())
    except ValueError:
        raise EscalationError(
            f"{choice!r} is not a decision", fix=f"answer one of: {CHOICES}"
        ) from None


def close_escalation(progress: ProgressDir, answer: Answer) -> None:
    path = progress.path / "escalation.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    state.update(
        status="answered",
        answer={
            "decision": answer.choice.value,
            "source": answer.source,
            "note": answer.note,
            "decidedBy": answer.decided_by,
            "answeredAt": utcnow().isoformat(),
        },
    )
    write_json_atomic(path, state)


def wait_for_answer(
    progress: ProgressDir,
    *,
    timeout: float,
    terminal: TextIO | None = None,
    poll: float = 0.2,
    other: Callable[[], Answer | None] | None = None,
) -> Answer:
    """First answer from the decision file, ``other`` (a runner's database channel, which
    may also answer abort when the task is cancelled), the terminal, or the clock."""
    deadline = time.monotonic() + timeout
    decision_file = progress.path / DECISION_FILE
    while True:
        answer = _read_decision_file(decision_file) or (other() if other else None)
        if answer is not None:
            return answer
        if terminal is not None:
            answer = _read_terminal(terminal, poll)
        else:
            time.sleep(poll)
        if answer is not None:
            return answer
        if time.monotonic() >= deadline:
            return Answer(
                EscalationChoice.ABORT,
                "timeout",
                note=f"no answer within {timeout:.0f} s",
                decided_by="timeout",
            )


def _read_decision_file(path: Path) -> Answer | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        choice = parse_choice(str(data["decision"]))
    except (ValueError, KeyError, TypeError, EscalationError) as exc:
        bad = path.with_name("escalation-decision.invalid.json")
        path.replace(bad)
        raise_later = f'ignored {path.name}: {exc}; expected {{"decision": one of {CHOICES}}}'
        bad.with_suffix(".txt").write_text(raise_later + "\n", encoding="utf-8")
        return None
    return Answer(
        choice,
        "file",
        note=str(data.get("note", "")),
        decided_by=str(data.get("decidedBy", "file")),
    )


def _read_terminal(terminal: TextIO, poll: float) -> Answer | None:
    """Read what the human typed straight from the descriptor (no hidden buffering, so
    select stays truthful) and take the first line that is a valid choice."""
    ready, _, _ = select.select([terminal], [], [], poll)
    if not ready:
        return None
    chunk = os.read(terminal.fileno(), 4096)
    if not chunk:  # closed: fall back to the other channels
        time.sleep(poll)
        return None
    for line in chunk.decode(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            return Answer(parse_choice(line), "terminal", decided_by="terminal")
        except EscalationError as exc:
            print(f"{exc}")
    return None
