"""The LLM planner (docs/planner.md): asks an OpenAI-compatible model for directives —
titled batches of tasks with dependencies — over the project's context and backlog, and
stores them for an operator to apply or reject (``capataz plan``, ``POST /ops/gpt/run``)."""

from capataz.planner.errors import (
    PlannerAnswerError,
    PlannerCredentialWaiting,
    PlannerError,
    PlannerNotConfigured,
    PlannerRateLimited,
    PlannerTimeout,
    PlannerUnauthorized,
    PlannerUnreachable,
    PlannerUpstreamError,
)
from capataz.planner.plan import (
    PlanResult,
    apply_directive,
    check_tasks,
    plan,
    planner_key,
    record,
    require_planner,
)

__all__ = [
    "PlanResult",
    "PlannerAnswerError",
    "PlannerCredentialWaiting",
    "PlannerError",
    "PlannerNotConfigured",
    "PlannerRateLimited",
    "PlannerTimeout",
    "PlannerUnauthorized",
    "PlannerUnreachable",
    "PlannerUpstreamError",
    "apply_directive",
    "check_tasks",
    "plan",
    "planner_key",
    "record",
    "require_planner",
]
