"""Denied connections become NETWORK_DENIED violations that say how to allow them."""

from __future__ import annotations

from datetime import UTC, datetime

from capataz.config import parse_config
from capataz.gates.network import agent_network_key, network_violations
from capataz.models import Severity, ViolationType
from capataz.sandbox.base import ExecOutcome, ExecResult
from capataz.sandbox.network import ConnectionRecord


def result(*records: ConnectionRecord) -> ExecResult:
    return ExecResult(ExecOutcome.OK, 0, None, 0.1, 0.1, 0, 0, False, [], connections=list(records))


def record(host: str, port: int, allowed: bool, reason: str = "not in x") -> ConnectionRecord:
    return ConnectionRecord(datetime.now(UTC), "CONNECT", host, port, allowed, reason)


def test_one_violation_per_denied_destination_naming_the_key() -> None:
    policy = parse_config("").policy
    key = agent_network_key("claude")
    found = network_violations(
        result(
            record("api.example.com", 443, True, "by 'api.example.com'"),
            record("evil.example", 443, False),
            record("evil.example", 443, False),
            record("a.test", 443, False, "a.test resolves to 127.0.0.1, a loopback address"),
        ),
        key=key,
        policy=policy,
    )
    assert [v.type for v in found] == [ViolationType.NETWORK_DENIED] * 2
    assert all(v.severity is Severity.MEDIUM and v.gate == "agent" for v in found)
    assert found[0].details == "denied connection to evil.example:443 (2 times): not in x"
    assert found[0].suggestion == (
        'allow it with [agents.claude] network = [..., "evil.example:443"] if the agent needs it'
    )
    assert "allow the address itself" in found[1].suggestion


def test_severity_is_configurable_and_nothing_denied_is_nothing() -> None:
    policy = parse_config('[policy.severity]\nNETWORK_DENIED = "critical"\n').policy
    found = network_violations(result(record("x.example", 80, False)), key="k", policy=policy)
    assert found[0].severity is Severity.CRITICAL
    assert network_violations(result(), key="k", policy=policy) == []
    assert network_violations(None, key="k", policy=policy) == []


def test_many_destinations_are_summarised() -> None:
    records = [record(f"h{n}.example", 443, False) for n in range(25)]
    found = network_violations(result(*records), key="k", policy=parse_config("").policy)
    assert len(found) == 21
    assert found[-1].details.startswith("and 5 more denied destinations")
