"""The runner HTTP protocol, written once: every body a remote runner sends to the
control plane's ``/runner`` routes and every ``data`` it gets back.

The server (:mod:`capataz.api.routes.runner`) parses requests with these models and
declares its answers with them; :class:`capataz.runner.remote.RemoteQueue` builds its
requests from them and reads the answers through them. One definition means the two
sides cannot drift apart: a field renamed here is renamed on both, and mypy follows it.

Requests forbid unknown fields (a typo is a 422 naming it, not a silently ignored
setting); answers ignore them, so an older runner can talk to a newer server. Every
success answer is the envelope ``{"ok": true, "data": ...}`` (:class:`Envelope`)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from capataz.models import IsoTime
from capataz.store.statuses import TaskState

__all__ = [
    "MAX_BATCH",
    "SWEEPER_HEADER",
    "Accepted",
    "AgentUsageOut",
    "BatchRecorded",
    "BudgetOut",
    "Claim",
    "ClaimThis",
    "ClaimedTaskOut",
    "Complete",
    "ContextEntries",
    "Current",
    "Envelope",
    "Escalate",
    "EscalationAnswerOut",
    "Heartbeat",
    "LogChunk",
    "Opened",
    "OutboxLog",
    "OutboxRecord",
    "OutboxStep",
    "PlannerFigures",
    "PlannerUsageOut",
    "Publish",
    "Published",
    "QueueMetrics",
    "Recorded",
    "Records",
    "Register",
    "Release",
    "Released",
    "Rescued",
    "RunDetailsIn",
    "RunnerIdOut",
    "Step",
    "Sweep",
    "TaskSecrets",
]

MAX_BATCH = 5000  # records in one batch: a remote runner's whole outbox (OUTBOX_LIMIT)
# On the /runner answers of a server that sweeps expired leases itself: its runners need not
# call /runner/sweep (older servers do not send it, and their runners keep sweeping).
SWEEPER_HEADER = "Capataz-Sweeper"
Lease = Annotated[float, Field(gt=0, le=86_400)]
Text = Annotated[str, Field(max_length=10_000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Phase = Annotated[str, Field(min_length=1, max_length=100)]
Seq = Annotated[int, Field(ge=1)]
D = TypeVar("D")


class _Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    """An answer's ``data``: unknown fields are ignored (a newer server may add some)."""

    model_config = ConfigDict(extra="ignore")


class Envelope(BaseModel, Generic[D]):
    """Every success answer: ``{"ok": true, "data": ...}``."""

    ok: Literal[True] = True
    data: D


# -- requests ---------------------------------------------------------------------------


class Register(_Body):
    name: Name
    labels: list[str] = Field(default_factory=list)
    hostname: Annotated[str, Field(max_length=255)] = ""
    pid: int = 0
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1


class Claim(_Body):
    runner_id: Name
    lease_seconds: Lease = 30.0
    labels: list[str] | None = None
    claim_key: Annotated[str | None, Field(max_length=200)] = None


class ClaimThis(_Body):
    runner_id: Name
    lease_seconds: Lease = 30.0
    claim_key: Annotated[str | None, Field(max_length=200)] = None


class Heartbeat(_Body):
    fencing_token: int
    lease_seconds: Lease = 30.0


class Release(_Body):
    fencing_token: int
    reason: Text = "released by its runner"
    delay_seconds: float = Field(default=0.0, ge=0, le=86400)  # e.g. waiting for a credential


class RunDetailsIn(BaseModel):
    """:class:`capataz.store.RunDetails` on the wire. Fields this server does not know
    are ignored (a newer runner may send more); ``outcome`` is required."""

    model_config = ConfigDict(extra="ignore")

    outcome: str
    exit_code: int | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    result_commit: str | None = None
    landed_commit: str | None = None
    file_changes: list[dict[str, JsonValue]] = Field(default_factory=list)
    violations: list[dict[str, JsonValue]] = Field(default_factory=list)
    decisions: list[dict[str, JsonValue]] = Field(default_factory=list)
    diff: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    model: str | None = None
    turns: int | None = None


class Complete(_Body):
    fencing_token: int
    state: TaskState
    reason: str | None = None
    decision: str | None = None
    actor: Annotated[str | None, Field(max_length=200)] = None
    details: RunDetailsIn | None = Field(
        default=None, description="How the run ended: outcome, exit_code, file_changes, ..."
    )


class Escalate(_Body):
    fencing_token: int
    reason: Text
    details: dict[str, JsonValue] | None = Field(
        default=None, description="What the human judges: violations, file changes, diff."
    )


class Step(_Body):
    phase: Phase
    status: Literal["started", "finished"]
    outcome: Text = ""
    seq: Seq | None = None


class LogChunk(_Body):
    text: str
    seq: Seq | None = None


class OutboxStep(_Body):
    """A step that started or finished, numbered by the runner's outbox."""

    kind: Literal["step"]
    seq: Seq
    phase: Phase
    status: Literal["started", "finished"]
    outcome: Text = ""


class OutboxLog(_Body):
    """A chunk of the run's log, numbered by the runner's outbox."""

    kind: Literal["log"]
    seq: Seq
    text: str


OutboxRecord = Annotated[OutboxStep | OutboxLog, Field(discriminator="kind")]


class Records(_Body):
    """A run's pending records, as a remote runner's outbox sends them all at once."""

    records: Annotated[list[OutboxRecord], Field(max_length=MAX_BATCH)]


class Sweep(_Body):
    actor: Annotated[str, Field(max_length=200)] = "sweeper"


class Publish(_Body):
    """What a landed run of the task published (``.capataz/context-out.json``)."""

    fencing_token: int
    entries: dict[str, JsonValue]
    ttl_seconds: Annotated[float | None, Field(gt=0)] = None


# -- answers ----------------------------------------------------------------------------


class BudgetOut(_Answer):
    """:class:`capataz.units.Budget` on the wire (None: no limit on that figure)."""

    tokens: int | None = None
    usd: float | None = None


class RunnerIdOut(_Answer):
    runner_id: str


class ClaimedTaskOut(_Answer):
    """:class:`capataz.store.ClaimedTask` on the wire."""

    id: str
    run_id: str
    title: str
    instruction: str
    agent: str
    labels: list[str]
    allow_high: bool
    base_commit: str | None
    attempt: int
    max_attempts: int
    fencing_token: int
    lease_expires_at: IsoTime
    budget: BudgetOut | None = None  # absent from an older server: the agent's default
    # A PRD task's ``prd:<path>#ACn`` (absent from an older server: no automatic tick)
    idempotency_key: str | None = None


class Current(_Answer):
    """Whether the fencing token still holds the task's lease."""

    current: bool


class Released(_Answer):
    released: bool


class Accepted(_Answer):
    accepted: bool


class Opened(_Answer):
    opened: bool


class Recorded(_Answer):
    """Whether the step or log chunk was new (False: already stored, by ``seq``)."""

    recorded: bool


class BatchRecorded(_Answer):
    """How many records of a batch were new, and whether the run's lease is held."""

    recorded: int
    current: bool


class Rescued(_Answer):
    rescued: list[str]


class EscalationAnswerOut(_Answer):
    """:class:`capataz.store.EscalationAnswer` on the wire."""

    decision: str
    note: str
    decided_by: str
    answered_at: IsoTime


class TaskSecrets(_Answer):
    """The claimed task's secret values, by name (never masked, never logged)."""

    values: dict[str, str]


class ContextEntries(_Answer):
    """What the claimed task receives from its dependencies, by context key."""

    entries: dict[str, JsonValue]


class Published(_Answer):
    published: list[str]


class _RunnerCounts(_Answer):
    online: int
    offline: int


class _RunCounts(_Answer):
    fail_rate_last_20: float
    total: int


class _Backlog(_Answer):
    oldest_ready_age_seconds: float | None


class AgentUsageOut(_Answer):
    """What one agent's runs reported they used, summed (``store.runs.usage_by_agent``)."""

    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    runs: int


class PlannerFigures(_Answer):
    """What planner calls used (``store.directives.usage``); ``cost_usd`` is None
    while no call had a ``[planner] price``."""

    calls: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None


class PlannerUsageOut(PlannerFigures):
    by_model: dict[str, PlannerFigures] = Field(default_factory=dict)


class QueueMetrics(_Answer):
    """The runbook's figures (``GET /ops/metrics``, ``GET /runner/metrics``): tasks
    per state (every state, zeros included), runners, recent failures, backlog age,
    usage by agent and the planner's (empty from an older server)."""

    tasks: dict[str, int]
    runners: _RunnerCounts
    runs: _RunCounts
    backlog: _Backlog
    usage: dict[str, AgentUsageOut] = Field(default_factory=dict)
    planner: PlannerUsageOut = Field(default_factory=PlannerUsageOut)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json")
        return data
