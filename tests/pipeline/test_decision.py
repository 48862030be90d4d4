"""The decision table of docs/decisions.md, row by row."""

from __future__ import annotations

import pytest

from capataz.models import Decision, GatePhase, Severity, Violation, ViolationType
from capataz.pipeline.decision import decide


def v(severity: Severity) -> Violation:
    return Violation(type=ViolationType.GATE_FAILED, severity=severity, details="x")


@pytest.mark.parametrize(
    ("phase", "severities", "allow_high", "expected"),
    [
        (GatePhase.PRE, [], False, Decision.CONTINUE),
        (GatePhase.PRE, [Severity.LOW], False, Decision.BLOCK),
        (GatePhase.POST, [], False, Decision.CONTINUE),
        (GatePhase.POST, [Severity.CRITICAL], True, Decision.BLOCK),
        (GatePhase.POST, [Severity.HIGH], False, Decision.BLOCK),
        (GatePhase.POST, [Severity.HIGH], True, Decision.ESCALATE),
        (GatePhase.POST, [Severity.MEDIUM], False, Decision.ESCALATE),
        (GatePhase.POST, [Severity.LOW], False, Decision.CONTINUE),
        (GatePhase.POST, [Severity.LOW, Severity.MEDIUM, Severity.CRITICAL], True, Decision.BLOCK),
        (GatePhase.POST, [Severity.LOW, Severity.MEDIUM], False, Decision.ESCALATE),
    ],
)
def test_decision_table(
    phase: GatePhase, severities: list[Severity], allow_high: bool, expected: Decision
) -> None:
    verdict = decide(phase, [v(s) for s in severities], allow_high=allow_high)
    assert verdict.decision is expected
    assert verdict.reason


def test_low_continues_with_a_warning_in_the_reason() -> None:
    verdict = decide(GatePhase.POST, [v(Severity.LOW), v(Severity.LOW)])
    assert "2 low violations" in verdict.reason and "warning" in verdict.reason
