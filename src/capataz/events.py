"""The live event stream's vocabulary: what ``GET /events`` sends, typed and versioned.

Events are written by the Store in the same transaction as the change they describe,
so a reader never sees an event for a change that was rolled back, and never misses
one for a change that committed. Each event is one JSON object::

    {"id": 42, "type": "task.state", "version": 1, "at": "...Z",
     "task_id": "t-...", "run_id": "r-..." | null, "data": {...}}

``id`` grows in commit order; a client that reconnects with ``Last-Event-ID: 42``
receives every event after 42. A change to the shape of an event's ``data`` bumps
:data:`VERSION`; new fields may be added without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["VERSION", "EventRecord", "EventType"]

VERSION = 1


class EventType(StrEnum):
    """Every event type, with what its ``data`` carries."""

    TASK_CREATED = "task.created"  # title, agent, status, priority, depends_on
    TASK_STATE = "task.state"  # status, was, reason
    RUN_STARTED = "run.started"  # runner_id, attempt
    RUN_STEP = "run.step"  # step, status ("started" | "finished"), outcome
    RUN_LOG = "run.log"  # text (one or more lines, each ending in a newline)
    RUN_FINISHED = "run.finished"  # status, outcome, result, decision, reason
    DECISION = "decision"  # decision, reason
    ESCALATION_OPENED = "escalation.opened"  # reason
    ESCALATION_ANSWERED = "escalation.answered"  # decision, decided_by, note
    RUNNER_ONLINE = "runner.online"  # runner_id, name, hostname
    RUNNER_OFFLINE = "runner.offline"  # runner_id, reason
    DIRECTIVE_CREATED = "directive.created"  # directive_id, title, status, tasks
    DIRECTIVE_DECIDED = "directive.decided"  # directive_id, status, decided_by, reason


@dataclass(frozen=True)
class EventRecord:
    id: int
    type: str
    at: datetime
    task_id: str | None
    run_id: str | None
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "version": VERSION,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "task_id": self.task_id,
            "run_id": self.run_id,
            "data": self.data,
        }
