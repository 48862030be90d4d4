"""Network allowlists: a host-side proxy on a private unix socket, and the small bridge
inside the sandbox that makes it reachable over TCP (see docs/network.md).

The proxy (capataz.sandbox.network.proxy, asyncio) is imported only by a run that has
an allowlist, so importing the sandbox stays cheap for everything else."""

from __future__ import annotations

from capataz.sandbox.network.policy import (
    ConnectionRecord,
    NetworkPolicy,
    network_setting,
    refused_address,
)

__all__ = [
    "ConnectionRecord",
    "NetworkPolicy",
    "network_setting",
    "refused_address",
]
