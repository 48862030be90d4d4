"""Running one phase's gates: the policy check (post only) and the command gates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capataz.config import Config, GateConfig
from capataz.gates.command import run_command_gate
from capataz.gates.policy import check_policy
from capataz.models import GatePhase, Violation, utcnow
from capataz.sandbox.base import OutputLine, Sandbox, SandboxSpec
from capataz.workspace.changes import ChangeSet

__all__ = ["GateReport", "run_gates"]


@dataclass
class GateReport:
    phase: GatePhase
    violations: list[Violation] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations


def run_gates(
    phase: GatePhase,
    config: Config,
    sandbox: Sandbox,
    *,
    workspace: Path,
    git_dir: Path | None,
    hide: list[Path],
    read_only: list[Path],
    changes: ChangeSet | None,
    on_output: Callable[[str, OutputLine], None],
    extra: list[Violation] | None = None,
    skip_commands: bool = False,
    should_stop: Callable[[], bool] | None = None,
    prepare: Callable[[GateConfig, SandboxSpec], SandboxSpec] | None = None,
) -> GateReport:
    """Run ``phase``'s checks; ``prepare`` has the last word on each command gate's
    sandbox spec (the pipeline adds the secrets that gate may see)."""
    report = GateReport(phase=phase, violations=list(extra or []))
    if phase is GatePhase.POST and changes is not None:
        found = check_policy(changes, config.policy)
        report.violations += found
        report.gates.append({"name": "policy", "passed": not found, "violations": len(found)})
    for gate in config.gates:
        if gate.phase is not phase:
            continue
        if skip_commands:
            report.gates.append({"name": gate.name, "passed": None, "skipped": True})
            continue
        started = utcnow()
        result, found = run_command_gate(
            gate,
            sandbox,
            workspace=workspace,
            git_dir=git_dir,
            hide=hide,
            read_only=read_only,
            on_output=functools.partial(on_output, f"gate:{gate.name}"),
            should_stop=should_stop,
            prepare=prepare,
        )
        report.violations += found
        report.gates.append(
            {
                "name": gate.name,
                "passed": not found,
                "exitCode": result.exit_code,
                "outcome": result.outcome.value,
                "startedAt": started.isoformat(),
                "wallSeconds": round(result.wall_seconds, 3),
            }
        )
    return report
