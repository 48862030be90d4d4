"""What goes into and comes out of one supervised run (:mod:`capataz.pipeline.supervisor`): the
task as the pipeline sees it, the events it reports as it goes, the report it ends
with, and the hooks a queue's runner steers it with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capataz.agents.preset import AgentUsage
from capataz.models import Decision, FileChange, Outcome, Violation
from capataz.pipeline.escalation import Answer
from capataz.pipeline.progress_state import StepRecord
from capataz.prd.branch import CriterionRef
from capataz.sandbox.base import ExecResult, OutputLine
from capataz.secrets.delivery import SecretSource
from capataz.units import Budget

__all__ = ["Event", "Listener", "RunHooks", "RunReport", "RunSpec"]


@dataclass(frozen=True)
class RunSpec:
    """What one supervised run executes: a task as the pipeline sees it. Not the queue's
    record of a task (:class:`capataz.store.NewTask` / :class:`capataz.store.Task`): a
    run needs only the instruction and who runs it, and one task may have many runs."""

    task_id: str
    instruction: str
    agent: str
    title: str = ""
    allow_high: bool | None = None  # None: the project's default
    attempt: int | None = None  # queued runs: each attempt gets its own workspace
    budget: Budget | None = None  # over the agent's [agents.X] budget, figure by figure
    prd: CriterionRef | None = None  # a PRD task's criterion: judged by, and ticked in, its PRD


@dataclass(frozen=True)
class Event:
    """What the pipeline tells its observer (the CLI's live view, the runner's records)."""

    kind: str  # "step", "output", "escalation"
    name: str = ""  # the step, or the output's source ("agent", "gate:tests")
    status: str = ""  # "started" / "finished" for steps
    detail: str = ""
    line: OutputLine | None = None
    data: dict[str, Any] | None = None  # structured detail (an escalation's evidence)


@dataclass
class RunReport:
    task_id: str
    outcome: Outcome
    decision: Decision
    reason: str
    message: str
    base: str
    result_commit: str | None = None
    landed_commit: str | None = None
    branch: str | None = None
    file_changes: list[FileChange] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    agent: ExecResult | None = None
    steps: list[StepRecord] = field(default_factory=list)
    progress_dir: Path | None = None
    diff: str | None = None  # the result against its base, unified
    usage: AgentUsage | None = None  # what the agent reported it used (a preset's reader)


Listener = Callable[[Event], None]


@dataclass(frozen=True)
class RunHooks:
    """How the owner of a queued task (a runner) steers a run from outside."""

    should_stop: Callable[[], bool] | None = None  # cancelled or lease lost: kill, roll back
    may_land: Callable[[], bool] | None = None  # last check before landing (the fencing token)
    answers: Callable[[], Answer | None] | None = None  # another escalation channel
    secrets: SecretSource | None = None  # where secret values come from (None: the vault)
