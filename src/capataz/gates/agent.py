"""The agent's own run as evidence: a hang, a timeout, a failure, processes it tried to
leave behind or output it flooded become violations like any gate's, so the decision
engine weighs them with everything else."""

from __future__ import annotations

import signal
from collections.abc import Sequence

from capataz.gates.agent_hints import memory_hint, missing_command_hint
from capataz.models import Severity, Violation, ViolationType
from capataz.sandbox.base import ExecOutcome, ExecResult

__all__ = ["agent_violations"]


def agent_violations(
    result: ExecResult | None,
    *,
    failure: tuple[str, str] | None = None,
    budget: tuple[str, str] | None = None,
    argv: Sequence[str] = (),
    search_path: str | None = None,
    expose: Sequence[str] = (),
    memory: int | None = None,
) -> list[Violation]:
    """The run's violations. ``failure`` is the agent's own account of a failure read
    from its output (reason, fix): it replaces the bare "exit code N" (and a stop
    capataz made because of it), since a CLI that got a 401 often exits 0. ``argv``,
    ``search_path`` and ``expose`` let an exit 127 name what the sandbox hides;
    ``memory`` (the agent's limit) lets a crash at start suggest raising it."""
    if result is None:
        return []
    found: list[Violation] = []

    def add(kind: ViolationType, severity: Severity, details: str, suggestion: str) -> None:
        found.append(
            Violation(
                type=kind,
                severity=severity,
                details=details,
                suggestion=suggestion,
                gate="agent",
            )
        )

    if failure is not None:
        add(ViolationType.AGENT_FAILED, Severity.CRITICAL, failure[0], failure[1])
    if budget is not None:
        add(ViolationType.BUDGET_EXCEEDED, Severity.HIGH, budget[0], budget[1])
    if result.outcome is ExecOutcome.HUNG:
        add(
            ViolationType.AGENT_HUNG,
            Severity.CRITICAL,
            f"agent hung: {result.detail}",
            "make the agent print progress, or raise idle_timeout for this agent",
        )
    elif result.outcome is ExecOutcome.TIMEOUT:
        add(
            ViolationType.AGENT_TIMEOUT,
            Severity.CRITICAL,
            f"agent timed out: {result.detail}",
            "split the task, or raise timeout for this agent",
        )
    elif result.outcome is ExecOutcome.DISK_LIMIT:
        add(
            ViolationType.DISK_LIMIT,
            Severity.CRITICAL,
            f"agent exceeded its disk limit: {result.detail}",
            "write less into the workspace, or raise disk for this agent",
        )
    elif result.outcome is ExecOutcome.MEMORY_LIMIT:
        add(
            ViolationType.MEMORY_LIMIT,
            Severity.HIGH,
            f"agent ran out of memory: {result.detail}",
            "raise memory for this agent (tmpfs writes count too), or use less of it",
        )
    # When the agent said why it failed, or capataz stopped it over its budget, that
    # violation is already added and the exit status adds nothing: no second one.
    elif (failure, budget) == (None, None) and result.outcome is ExecOutcome.CANCELLED:
        add(ViolationType.AGENT_FAILED, Severity.CRITICAL, "agent run was cancelled", "")
    elif (failure, budget) == (None, None) and result.outcome is ExecOutcome.FAILED:
        how = (
            f"exit code {result.exit_code}"
            if result.exit_code is not None
            else f"killed by {signal.Signals(result.signal or 9).name}"
        )
        details = f"agent failed: {result.detail or how}"
        suggestion = (
            "read artifacts/run.log; SIGKILL or SIGXCPU usually means a memory or CPU limit"
        )
        if result.exit_code in (126, 127):
            missing, suggestion = missing_command_hint(argv, search_path=search_path, expose=expose)
            details = f"{details}: {missing}"
        elif (hint := memory_hint(result.signal, memory, result.wall_seconds)) is not None:
            suggestion = hint
        add(ViolationType.AGENT_FAILED, Severity.HIGH, details, suggestion)
    if result.leftover_processes:
        add(
            ViolationType.AGENT_LEFT_PROCESSES,
            Severity.HIGH,
            f"agent left {len(result.leftover_processes)} background process(es) running "
            f"({', '.join(result.leftover_processes[:5])}); all were killed",
            "agents must wait for what they start",
        )
    if result.output_truncated:
        add(
            ViolationType.OUTPUT_LIMIT,
            Severity.LOW,
            f"agent printed {result.output_bytes} bytes; the log keeps the first part only",
            "raise max_output for this agent if the full log matters",
        )
    return found
