"""The decision engine, exactly as docs/decisions.md specifies it.

Pre-task: no violations → CONTINUE, any → BLOCK. Post-task: critical → BLOCK;
high → BLOCK, or ESCALATE when the task allows high violations; medium → ESCALATE;
low → CONTINUE with a warning. Pure functions: easy to test, impossible to drift."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from capataz.models import Decision, GatePhase, Severity, Violation

__all__ = ["Verdict", "decide"]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    worst: Severity | None = None


def _summary(violations: Sequence[Violation], severity: Severity) -> str:
    hits = [v for v in violations if v.severity is severity]
    kinds = sorted({v.type.value for v in hits})
    plural = "s" if len(hits) != 1 else ""
    return f"{len(hits)} {severity.value} violation{plural} ({', '.join(kinds)})"


def decide(
    phase: GatePhase, violations: Sequence[Violation], *, allow_high: bool = False
) -> Verdict:
    if not violations:
        return Verdict(Decision.CONTINUE, "No violations detected")
    worst = max((v.severity for v in violations), key=lambda s: s.rank)
    summary = _summary(violations, worst)
    if phase is GatePhase.PRE:
        return Verdict(Decision.BLOCK, f"pre-task gates failed: {summary}", worst)
    if worst is Severity.CRITICAL:
        return Verdict(Decision.BLOCK, f"{summary}: blocked", worst)
    if worst is Severity.HIGH:
        if allow_high:
            return Verdict(
                Decision.ESCALATE,
                f"{summary}: the task allows high violations, so a human decides",
                worst,
            )
        return Verdict(Decision.BLOCK, f"{summary}: blocked", worst)
    if worst is Severity.MEDIUM:
        return Verdict(Decision.ESCALATE, f"{summary}: a human decides", worst)
    return Verdict(Decision.CONTINUE, f"{summary}: continuing with a warning", worst)
