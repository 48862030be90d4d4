"""progress.json as a typed model: what one run says about itself while it goes.

The file is a contract read by humans, `capataz resume`, `capataz decide`, dashboards
and the gc, so its keys are camelCase and stay exactly what they were when the file
was assembled from loose dicts: each field carries its key as an alias, and a key
appears only once the run has set it (``workspace`` after prepare, ``outcome`` at the
end…), as before. That is what :class:`_Sparse` is for: fields left at their default
are not written, fields set (even to ``null``) are."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from pydantic.alias_generators import to_camel

from capataz.errors import TaskError
from capataz.models import FileChange, IsoTime, Violation

__all__ = [
    "GateSummary",
    "ProgressMetrics",
    "ProgressState",
    "StepRecord",
    "Validation",
    "read_progress",
]


class _Camel(BaseModel):
    """camelCase keys on disk, snake_case names in code; unknown keys are kept (a file
    written by a newer capataz is read back, not refused)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, validate_assignment=True, extra="allow"
    )


class _Sparse(_Camel):
    """Writes only the fields that were set: the file grows key by key as the run
    advances, exactly as the dict it replaces did."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        keep = set(self.model_fields_set) | set(self.model_extra or {})
        keep |= {fields[name].alias or name for name in self.model_fields_set if name in fields}
        return {key: value for key, value in data.items() if key in keep}


class StepRecord(_Camel):
    """One pipeline step as progress.json and the run report list it."""

    phase: str
    started_at: IsoTime
    ended_at: IsoTime
    outcome: str  # "ok" or "error"
    seconds: float


class GateSummary(_Camel):
    """One gate phase's result (``validation.preTask`` / ``validation.postTask``)."""

    passed: bool
    timestamp: IsoTime
    violations: list[Violation]


class Validation(_Sparse):
    pre_task: GateSummary | None = None
    post_task: GateSummary | None = None


class ProgressMetrics(_Sparse):
    """Figures about the agent's run and its result, filled in by execute and collect."""

    agent_exit_code: int | None = None
    agent_outcome: str | None = None
    execution_time_ms: int | None = None
    agent_cpu_seconds: float | None = None
    agent_peak_memory_bytes: int | None = None
    agent_output_bytes: int | None = None
    leftover_processes: list[str] | None = None
    files_created: int | None = None
    files_modified: int | None = None
    files_deleted: int | None = None
    lines_added: int | None = None
    lines_removed: int | None = None
    rollbacks_applied: int | None = None
    # what the agent reported it used (agents with a preset): tokens sent (cached ones
    # included) and received, its cost when it reports one, its model, its turns
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    model: str | None = None
    turns: int | None = None

    def count_changes(self, changes: list[FileChange]) -> None:
        """The result's size: files by kind, lines added and removed."""
        self.files_created = sum(c.kind.value == "added" for c in changes)
        self.files_modified = sum(c.kind.value == "modified" for c in changes)
        self.files_deleted = sum(c.kind.value == "deleted" for c in changes)
        self.lines_added = sum(c.lines_added for c in changes)
        self.lines_removed = sum(c.lines_removed for c in changes)


class PrdTick(_Camel):
    """A PRD task's criterion ticked on the target branch after its result landed:
    ``commit`` is capataz's commit (None when there was nothing to tick), ``pending``
    why it could not be ticked (then ``capataz prd tick`` catches up)."""

    prd: str
    ac: str
    commit: str | None = None
    pending: str | None = None
    at: IsoTime


class ProgressState(_Sparse):
    """The whole of progress.json. Fields below ``steps`` appear as the run sets them."""

    task_id: str
    title: str
    description: str
    instruction: str
    agent: str
    allow_high: bool | None
    status: str
    current_phase: str
    created_at: IsoTime
    started_at: IsoTime
    completed_at: IsoTime | None
    base_commit: str
    target_branch: str
    sandbox: str
    validation: Validation = Field(default_factory=Validation)
    metrics: ProgressMetrics = Field(default_factory=ProgressMetrics)
    steps: list[StepRecord] = Field(default_factory=list)
    last_update: IsoTime | None = None
    workspace: str | None = None
    result_commit: str | None = None
    file_changes: list[FileChange] | None = None
    awaiting_human: bool | None = None
    outcome: str | None = None
    landed_commit: str | None = None
    branch: str | None = None
    rejected_ref: str | None = None
    rejected_inspect: str | None = None
    reason: str | None = None
    message: str | None = None
    prd: str | None = None  # a PRD task's key, prd:<path>#ACn
    prd_tick: PrdTick | None = None

    def to_json(self) -> dict[str, Any]:
        """What progress.json holds: camelCase keys, JSON values."""
        data: dict[str, Any] = self.model_dump(by_alias=True, mode="json")
        return data


def read_progress(text: str, where: str) -> ProgressState:
    """progress.json read back through the model, or a one-line error saying the file
    is not one capataz wrote (``where`` names it)."""
    try:
        return ProgressState.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        raise TaskError(
            f"{where} is not a capataz progress file ({field}: {first['msg']})",
            fix="check the task id; the file is written by `capataz exec` and the runners",
        ) from None
