"""The vocabulary every part of capataz shares: severities, decisions, violations and
file changes. Enum values are the strings written to progress files (and, later, the
database), so they never change casually."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

__all__ = [
    "ChangeKind",
    "Decision",
    "DecisionRecord",
    "EscalationChoice",
    "FileChange",
    "GatePhase",
    "IsoTime",
    "Outcome",
    "ProgressStatus",
    "Severity",
    "Violation",
    "ViolationType",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# A time written as ``datetime.isoformat()`` gives it ("+00:00", not pydantic's "Z"): the
# files and answers written before the models existed used that form, and readers
# comparing strings keep working.
IsoTime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher is worse; lets callers take ``max`` over a list of violations."""
        return {"critical": 4, "high": 3, "medium": 2, "low": 1}[self.value]


class Decision(StrEnum):
    """Decision names (a contract: docs/decisions.md)."""

    CONTINUE = "CONTINUE"
    BLOCK = "BLOCK"
    ESCALATE = "ESCALATE"
    COMPLETED = "COMPLETED"
    ROLLED_BACK = "ROLLED_BACK"


class GatePhase(StrEnum):
    PRE = "pre"
    POST = "post"


class EscalationChoice(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    ABORT = "abort"


class ProgressStatus(StrEnum):
    """Where one supervised run is, as written to its progress.json. Not the queue's
    state of a task (:class:`capataz.store.TaskState`): some names are shared with
    different meanings; docs/statuses.md maps one onto the other."""

    PENDING = "pending"
    VALIDATING_PRE = "validating-pre"
    IN_PROGRESS = "in-progress"
    VALIDATING_POST = "validating-post"
    ESCALATED = "escalated"
    COMPLETED = "completed"
    BLOCKED = "blocked"
    ROLLED_BACK = "rolled-back"


class Outcome(StrEnum):
    """How one `capataz exec` ended; the CLI's exit code is derived from it."""

    LANDED = "landed"
    BRANCH = "branch"  # result kept on capataz/<task-id> for review (land="branch" or dirty tree)
    BLOCKED = "blocked"  # a gate blocked it; changes rolled back
    REJECTED = "rejected"  # a human said reject; rolled back
    ABORTED = "aborted"  # a human (or the escalation timeout) said abort; rolled back
    AWAITING_HUMAN = "awaiting-human"  # modify: workspace kept for edits, `capataz resume`
    NO_CHANGES = "no-changes"  # the agent changed nothing; nothing to land
    CANCELLED = "cancelled"  # stopped from outside (cancel, lost lease); rolled back

    @property
    def exit_code(self) -> int:
        return {
            "landed": 0,
            "branch": 0,
            "no-changes": 0,
            "blocked": 1,
            "rejected": 1,
            "aborted": 1,
            "awaiting-human": 3,
            "cancelled": 1,
        }[self.value]


class ViolationType(StrEnum):
    FORBIDDEN_PATH = "FORBIDDEN_PATH"
    FORBIDDEN_IMPORT = "FORBIDDEN_IMPORT"
    FORBIDDEN_TOKEN = "FORBIDDEN_TOKEN"  # noqa: S105 - a violation name, not a password
    TOO_MANY_FILES = "TOO_MANY_FILES"
    TOO_MANY_LINES = "TOO_MANY_LINES"
    ENCODING = "ENCODING"
    LINE_ENDINGS = "LINE_ENDINGS"
    EMBEDDED_REPOSITORY = "EMBEDDED_REPOSITORY"
    GATE_FAILED = "GATE_FAILED"
    GATE_TIMEOUT = "GATE_TIMEOUT"
    AGENT_FAILED = "AGENT_FAILED"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"
    AGENT_HUNG = "AGENT_HUNG"
    AGENT_LEFT_PROCESSES = "AGENT_LEFT_PROCESSES"
    MEMORY_LIMIT = "MEMORY_LIMIT"  # the run's memory budget ran out (cgroup OOM kill)
    DISK_LIMIT = "DISK_LIMIT"  # the run wrote more than its disk limit into the workspace
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    CONTEXT = "CONTEXT"  # a context publication refused (bad file, key, value, rule)
    SECRET_LEAK = "SECRET_LEAK"  # noqa: S105 - an added line holds a vault value
    SYMLINK_ESCAPE = "SYMLINK_ESCAPE"  # a symlink pointing outside the workspace
    SUBMODULE_CONFIG = "SUBMODULE_CONFIG"  # a new or changed .gitmodules
    NETWORK_DENIED = "NETWORK_DENIED"  # the agent tried a host its network allowlist lacks
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the agent used more tokens or dollars than its budget
    OUT_OF_SCOPE = "OUT_OF_SCOPE"  # a PRD task touched an item of its PRD's Out of Scope list


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: ViolationType
    severity: Severity
    details: str
    suggestion: str = ""
    file: str | None = None
    line: int | None = None
    gate: str = "policy"
    phase: GatePhase = GatePhase.POST


class ChangeKind(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    kind: ChangeKind
    lines_added: int = 0
    lines_removed: int = 0
    binary: bool = False


class DecisionRecord(BaseModel):
    """One line of decisions.jsonl."""

    timestamp: datetime = Field(default_factory=utcnow)
    phase: str
    decision: Decision
    reason: str
