"""Connections the agent's network allowlist refused, as violations.

A denied connection is evidence, not a failure by itself: the agent may have probed and
moved on, or may have been stopped from exfiltrating. So it is weighed like any other
finding (NETWORK_DENIED, medium by default: the run escalates to a human unless
``[policy.severity]`` says otherwise), one violation per destination, and the message
names the key that would allow it.
"""

from __future__ import annotations

from collections import Counter

from capataz.config import PolicyConfig
from capataz.models import Violation, ViolationType
from capataz.sandbox.base import ExecResult
from capataz.sandbox.network import ConnectionRecord

__all__ = ["agent_network_key", "network_violations"]

_SHOWN = 20  # destinations named one by one; the rest are counted in the last one


def network_violations(
    result: ExecResult | None, *, key: str, policy: PolicyConfig, gate: str = "agent"
) -> list[Violation]:
    """One NETWORK_DENIED violation per denied ``host:port`` of ``result``'s connections.

    ``key`` is the configuration key that allows more (``[agents.claude] network``)."""
    if result is None:
        return []
    denied = [record for record in result.connections if not record.allowed]
    counts = Counter(record.destination for record in denied)
    first: dict[str, ConnectionRecord] = {}
    for record in denied:
        first.setdefault(record.destination, record)
    severity = policy.severity_of(ViolationType.NETWORK_DENIED)
    found: list[Violation] = []
    for destination, record in list(first.items())[:_SHOWN]:
        times = f" ({counts[destination]} times)" if counts[destination] > 1 else ""
        if record.reason.startswith("not in "):
            suggestion = f'allow it with {key} = [..., "{destination}"] if the agent needs it'
        else:
            suggestion = (
                "a name may not lead to the host's loopback or link-local addresses; if "
                f"that endpoint is wanted, allow the address itself in {key}"
            )
        found.append(
            Violation(
                type=ViolationType.NETWORK_DENIED,
                severity=severity,
                details=f"denied connection to {destination}{times}: {record.reason}",
                suggestion=suggestion,
                gate=gate,
            )
        )
    rest = len(first) - _SHOWN
    if rest > 0:
        found.append(
            Violation(
                type=ViolationType.NETWORK_DENIED,
                severity=severity,
                details=f"and {rest} more denied destinations (see artifacts/run.log)",
                suggestion=f"review {key}",
                gate=gate,
            )
        )
    return found


def agent_network_key(agent: str) -> str:
    """The configuration key an agent's denials name: ``[agents.<name>] network``."""
    return f"[agents.{agent}] network"
