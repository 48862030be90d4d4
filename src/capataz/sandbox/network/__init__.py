"""Network allowlists: a host-side proxy on a private unix socket, and the small bridge
inside the sandbox that makes it reachable over TCP (see docs/network.md)."""

from __future__ import annotations

from capataz.sandbox.network.policy import (
    ConnectionRecord,
    NetworkPolicy,
    network_setting,
    refused_address,
)
from capataz.sandbox.network.proxy import NetworkProxy, Resolver, default_resolver

__all__ = [
    "ConnectionRecord",
    "NetworkPolicy",
    "NetworkProxy",
    "Resolver",
    "default_resolver",
    "network_setting",
    "refused_address",
]
