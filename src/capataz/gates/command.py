"""Command gates: a user-configured check (tests, a linter) run in the sandbox against
the workspace. A non-zero exit, a timeout or a hang becomes one violation with the
gate's severity; the last lines of its output become the violation's details."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from capataz.config import GateConfig
from capataz.models import Severity, Violation, ViolationType
from capataz.sandbox.base import (
    ExecOutcome,
    ExecResult,
    OutputLine,
    OutputSink,
    Sandbox,
    SandboxSpec,
)
from capataz.sandbox.network import network_setting

__all__ = ["run_command_gate"]


def run_command_gate(
    gate: GateConfig,
    sandbox: Sandbox,
    *,
    workspace: Path,
    git_dir: Path | None,
    hide: list[Path],
    read_only: list[Path],
    on_output: OutputSink,
    should_stop: Callable[[], bool] | None = None,
    prepare: Callable[[GateConfig, SandboxSpec], SandboxSpec] | None = None,
) -> tuple[ExecResult, list[Violation]]:
    tail: deque[str] = deque(maxlen=8)

    def sink(line: OutputLine) -> None:
        tail.append(line.text)
        on_output(line)

    spec = SandboxSpec(
        argv=gate.argv,
        workspace=workspace,
        limits=gate,
        git_dir=git_dir,
        read_only=read_only,
        hide=hide,
        network=network_setting(gate.network, f"[[gates]] {gate.name!r} network"),
    )
    if prepare is not None:  # the gate's secrets, if it lists any
        spec = prepare(gate, spec)
    result = sandbox.run(spec, sink, should_stop)
    if result.ok:
        return result, []
    last = " | ".join(line.strip() for line in tail if line.strip())[-600:]
    if result.outcome in (ExecOutcome.TIMEOUT, ExecOutcome.HUNG):
        kind, severity = (
            ViolationType.GATE_TIMEOUT,
            max(gate.severity, Severity.HIGH, key=lambda s: s.rank),
        )
        details = f"gate {gate.name!r} did not finish: {result.detail}"
        suggestion = f"make the gate faster or raise its timeout in [[gates]] {gate.name!r}"
    else:
        kind, severity = ViolationType.GATE_FAILED, gate.severity
        failed = result.outcome is ExecOutcome.FAILED and result.exit_code is not None
        code = f"exit code {result.exit_code}" if failed else result.detail
        details = f"gate {gate.name!r} failed ({code})" + (f": {last}" if last else "")
        command = gate.run if isinstance(gate.run, str) else " ".join(gate.run)
        suggestion = f"run `{command}` in the workspace to see why"
    return result, [
        Violation(
            type=kind,
            severity=severity,
            details=details,
            suggestion=suggestion,
            gate=gate.name,
            phase=gate.phase,
        )
    ]
