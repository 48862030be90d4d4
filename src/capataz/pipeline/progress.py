"""Progress files, the layout docs/progress-files.md fixes (a contract):

    <progress dir>/<task-id>/progress.json       current state, overwritten atomically
                             decisions.jsonl     append-only
                             violations.jsonl    append-only
                             artifacts/          reports, rollback evidence, run.log

Every write is atomic (temp file + rename) or an append of whole lines, so a reader — a
human, `capataz decide`, a dashboard — never sees half a file."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from capataz.models import Decision, DecisionRecord, GatePhase, Violation, utcnow
from capataz.pipeline.progress_state import ProgressState, read_progress
from capataz.redaction import redact_data
from capataz.statedir import refuse_symlink, write_json_atomic

__all__ = ["ProgressDir"]


class ProgressDir:
    """One task id's evidence directory, owned by the run that last reset it.

    Two attempts of one task can overlap (a runner presumed dead wakes up after another
    took its task over); the ``.owner`` token makes the stale one's writes no-ops instead
    of corrupting the newer attempt's evidence."""

    def __init__(self, root: Path, task_id: str) -> None:
        self.path = root / task_id
        self.artifacts = self.path / "artifacts"
        self._state: ProgressState | None = None
        self.token: str | None = None
        self._owner_checked = 0.0

    @property
    def run_log(self) -> Path:
        return self.artifacts / "run.log"

    @property
    def state(self) -> ProgressState:
        """The run's progress; the supervisor changes it in place and :meth:`save`
        writes it (once per step, and at the moments a reader must see at once)."""
        if self._state is None:
            raise RuntimeError(f"{self.path}: no progress yet (reset or load first)")
        return self._state

    def reset(self, state: ProgressState) -> None:
        """Start a run of this task id afresh: re-running an id overwrites, never duplicates."""
        refuse_symlink(self.path)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.artifacts.mkdir(parents=True)
        for name in ("decisions.jsonl", "violations.jsonl"):
            (self.path / name).touch()
        self.token = uuid.uuid4().hex
        (self.path / ".owner").write_text(self.token)
        self._state = state
        self.save()

    @property
    def owned(self) -> bool:
        """False once a newer run of the same task id has taken the directory over."""
        if self.token is None:
            return True
        now = time.monotonic()
        if now - self._owner_checked < 0.5:  # checked moments ago: a takeover takes seconds
            return True
        try:
            owned = (self.path / ".owner").read_text() == self.token
        except OSError:
            owned = False
        if owned:
            self._owner_checked = now
        return owned

    def load(self) -> ProgressState:
        """progress.json read back through the model (a file capataz did not write is
        a one-line :class:`~capataz.errors.TaskError`)."""
        path = self.path / "progress.json"
        self._state = read_progress(path.read_text(encoding="utf-8"), str(path))
        owner = self.path / ".owner"
        self.token = owner.read_text() if owner.exists() else None
        return self._state

    def exists(self) -> bool:
        return (self.path / "progress.json").is_file()

    def save(self) -> None:
        if not self.owned:
            return
        self.state.last_update = utcnow()
        write_json_atomic(self.path / "progress.json", self.state.to_json())

    def record_decision(self, phase: str, decision: Decision, reason: str) -> DecisionRecord:
        record = DecisionRecord(phase=phase, decision=decision, reason=reason)
        self._append("decisions.jsonl", [record.model_dump(mode="json")])
        return record

    def record_violations(self, violations: Iterable[Violation]) -> None:
        now = utcnow().isoformat()
        self._append(
            "violations.jsonl",
            [{"timestamp": now, **v.model_dump(mode="json")} for v in violations],
        )

    def write_report(self, phase: GatePhase, report: dict[str, Any]) -> None:
        if not self.owned:
            return
        write_json_atomic(self.artifacts / f"{phase.value}-task-report.json", report)

    def decisions(self) -> list[dict[str, Any]]:
        return self._read_lines("decisions.jsonl")

    def violations(self) -> list[dict[str, Any]]:
        return self._read_lines("violations.jsonl")

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        if not rows or not self.owned:
            return
        text = "".join(
            json.dumps(redact_data(row), separators=(",", ":"), default=str) + "\n" for row in rows
        )
        with (self.path / name).open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def _read_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
