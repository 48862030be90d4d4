"""The agent's run as its preset reads it: failures caught early, chatter, usage.

Agent CLIs report their failures in their own output and often exit 0 anyway (a 401,
no network, a refused tool call), or retry quietly until the wall timeout. The preset's
:class:`~capataz.agents.preset.OutputReader` reads every line as it arrives; this module
plugs it into one run:

* the sink: each line goes to the run log and the live view as before, then to the
  reader, whose answer (False for retry chatter) tells the sandbox whether the line is
  progress for the idle watchdog;
* the stop: as soon as the reader sets ``failure`` the run is stopped through the
  sandbox's ``should_stop`` hook (polled every 0.1 s), so a 401 ends the run in seconds;
* the outcome: that stop is not a cancellation but a failed run, reported as an
  AGENT_FAILED violation (critical: no gate command runs, the result is rolled back)
  whose details are the agent's reason and whose suggestion is the fix;
* the budget: the reader adds up usage as the agent reports it; once tokens (in plus
  out) or the reported cost pass the run's budget, the run is stopped the same way (a
  BUDGET_EXCEEDED violation, high: blocked, nothing lands);
* the usage the agent reported (tokens, cost, model, turns), into progress.json and
  the run's report.

An agent without a preset has no reader: every line is progress, as always.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from capataz.agents.preset import (
    AgentFailure,
    AgentUsage,
    BudgetExcess,
    OutputReader,
    endpoint_address,
    over_budget,
)
from capataz.agents.presets import preset_named
from capataz.config import AgentConfig
from capataz.gates.agent import agent_violations
from capataz.gates.paths import match_any
from capataz.models import Violation
from capataz.pipeline.progress_state import ProgressMetrics
from capataz.pipeline.runlog import RunLog
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, OutputSink
from capataz.units import Budget
from capataz.workspace.isolated import Workspace

__all__ = ["AgentWatch", "ignored", "leave_out_state_files"]


def ignored(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """A predicate for the agent's state files (``ignore`` globs, as forbidden_paths
    reads them): a path matches when it or one of its directories does, so ``.aider*``
    covers the files inside ``.aider.tags.cache.v4/``. None when there are none."""
    if not patterns:
        return None
    globs = list(patterns)

    def matches(path: str) -> bool:
        parts = path.split("/")
        return any(match_any("/".join(parts[:n]), globs) for n in range(1, len(parts) + 1))

    return matches


def leave_out_state_files(workspace: Workspace, agent: AgentConfig, log: RunLog) -> list[str]:
    """Undo what the agent wrote to its state files (its ``ignore`` globs, the preset's
    included) before the result is committed: they never land, and a run that wrote
    nothing else has no changes."""
    matches = ignored(agent.ignore)
    left = workspace.leave_out(matches) if matches is not None else []
    if left:
        log.note("capataz", f"left out the agent's state files: {', '.join(left)}")
    return left


class AgentWatch:
    """One agent run seen through its preset's reader (see the module docstring)."""

    def __init__(
        self,
        name: str,
        agent: AgentConfig,
        argv: Sequence[str],
        log: RunLog,
        path: str | None,
        *,
        budget: Budget | None = None,
    ) -> None:
        self.name = name
        self.agent = agent
        self.argv = list(argv)
        self.log = log
        self.search_path = path  # the PATH the agent's env sets, if any
        self.reader: OutputReader | None = (
            preset_named(agent.preset).reader() if agent.preset is not None else None
        )
        self.stopped = False  # capataz stopped the run because the reader saw a failure
        # the task's budget over the agent's default; only a reader can be held to it
        self.budget = budget.over(agent.budget) if budget is not None else agent.budget
        self.excess: BudgetExcess | None = None  # set once usage went past the budget
        if self.budget is not None and self.reader is None:
            shown = self.budget.describe()
            log.note("capataz", f"budget {shown} not enforced: agent {name} reports no usage")

    def sink(self, show: Callable[[OutputLine], None]) -> OutputSink:
        """The sandbox's sink: ``show`` the line (run log, live view), then let the
        reader judge it; its False (chatter) does not reset the idle watchdog."""

        def take(line: OutputLine) -> bool | None:
            show(line)
            if self.reader is None or line.stream not in ("out", "err"):
                return None
            try:
                return self.reader.feed(line.stream, line.text)
            except Exception as exc:  # noqa: BLE001  (a reader's bug must not kill the run)
                self.log.note("capataz", f"the {self.agent.preset} reader failed ({exc!r}); off")
                self.reader = None
                return None

        return take

    def should_stop(self, outer: Callable[[], bool] | None) -> Callable[[], bool]:
        """Stop once the reader has seen a failure or the usage went past the budget
        (checked on every poll of the sandbox, 0.1 s), or when the caller says so."""

        def check() -> bool:
            if self.reader is not None and self.reader.failure is not None:
                self.stopped = True
                return True
            if self.reader is not None and self.excess is None:
                self.excess = over_budget(self.reader.usage, self.budget)
            if self.excess is not None:
                self.stopped = True
                return True
            return outer() if outer is not None else False

        return check

    def finish(self, result: ExecResult, metrics: ProgressMetrics) -> ExecResult:
        """Tell the reader the agent has ended; a stop made for its failure becomes a
        failed run (not a cancellation) whose detail is the agent's own reason. The
        run's figures go to ``metrics`` (progress.json)."""
        result = self._judged(result)
        self.log.note("capataz", f"agent ended: {result.outcome.value} {result.detail}".strip())
        self._record(metrics, result)
        return result

    def _judged(self, result: ExecResult) -> ExecResult:
        if self.reader is not None:
            try:
                self.reader.finish(result.exit_code)
            except Exception as exc:  # noqa: BLE001  (as in sink)
                self.log.note("capataz", f"the {self.agent.preset} reader failed ({exc!r})")
            if self.excess is None:  # it ended between two polls, past its budget
                self.excess = over_budget(self.reader.usage, self.budget)
        failure = self.failure
        if failure is not None:
            self.log.note("capataz", f"agent failure: {failure.reason}; fix: {failure.fix}")
            if self.stopped and result.outcome is ExecOutcome.CANCELLED:
                detail = f"stopped by capataz: {failure.reason}"
                return dataclasses.replace(result, outcome=ExecOutcome.FAILED, detail=detail)
        elif self.excess is not None:
            self.log.note("capataz", f"over budget: {self.excess.details}")
            if self.stopped and result.outcome is ExecOutcome.CANCELLED:
                detail = f"stopped by capataz: over budget: {self.excess.details}"
                return dataclasses.replace(result, outcome=ExecOutcome.FAILED, detail=detail)
        return result

    @property
    def failure(self) -> AgentFailure | None:
        """The reader's failure, ``{agent}`` and ``{endpoint}`` filled in."""
        found = self.reader.failure if self.reader is not None else None
        if found is None:
            return None
        endpoint = endpoint_address(self.agent.endpoint) if self.agent.endpoint else "host:port"

        def fill(text: str) -> str:
            return text.replace("{agent}", self.name).replace("{endpoint}", endpoint)

        return AgentFailure(reason=fill(found.reason), fix=fill(found.fix))

    @property
    def usage(self) -> AgentUsage | None:
        return self.reader.usage if self.reader is not None else None

    def violations(self, result: ExecResult | None, expose: Sequence[str]) -> list[Violation]:
        failure, excess = self.failure, self.excess
        return agent_violations(
            result,
            failure=(failure.reason, failure.fix) if failure is not None else None,
            budget=(excess.details, excess.suggestion.replace("{agent}", self.name))
            if excess is not None and failure is None
            else None,
            argv=self.argv,
            search_path=self.search_path,
            expose=expose,
            memory=self.agent.memory,
        )

    def _record(self, metrics: ProgressMetrics, result: ExecResult) -> None:
        """What the run cost, for progress.json (usage only when a preset read it)."""
        metrics.agent_exit_code = result.exit_code
        metrics.agent_outcome = result.outcome.value
        metrics.execution_time_ms = round(result.wall_seconds * 1000)
        metrics.agent_cpu_seconds = round(result.cpu_seconds, 3)
        metrics.agent_peak_memory_bytes = result.peak_memory_bytes
        metrics.agent_output_bytes = result.output_bytes
        metrics.leftover_processes = result.leftover_processes
        usage = self.usage
        if usage is not None:
            metrics.tokens_in = usage.tokens_in
            metrics.tokens_out = usage.tokens_out
            metrics.cost_usd = usage.cost_usd
            metrics.model = usage.model
            metrics.turns = usage.turns
