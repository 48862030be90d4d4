"""What a run's network allowlist lets through, decided on the host for each connection.

The agent never decides anything here: it only names a destination (a CONNECT target
or an absolute URL), which is normalised by :func:`capataz.names.normalise_host` and
compared with the allowlist's patterns in that one canonical form. Names are checked as
names; the addresses they resolve to are then screened (:func:`refused_address`), so an
allowed name cannot lead to the host's own loopback or a link-local service such as a
cloud metadata endpoint. The proxy connects to the very address it screened: no second
lookup an attacker could race.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from capataz.names import HostPattern, parse_host_pattern

__all__ = [
    "ConnectionRecord",
    "NetworkPolicy",
    "network_setting",
    "refused_address",
]


@dataclass(frozen=True)
class NetworkPolicy:
    """A run's allowlist (``network = [...]``). ``key`` is the configuration key that
    allows more, named in every refusal (``[agents.claude] network``)."""

    patterns: tuple[HostPattern, ...]
    key: str = "network"

    @classmethod
    def parse(cls, texts: Sequence[str], key: str = "network") -> NetworkPolicy:
        """Raises capataz.names.HostPatternError on a bad entry (config already refused
        those at load time; this is for callers building a policy by hand)."""
        return cls(tuple(parse_host_pattern(text) for text in texts), key)

    def allowing(self, host: str, port: int) -> HostPattern | None:
        """The first pattern that allows ``host`` (normalised) on ``port``, or None."""
        return next((p for p in self.patterns if p.matches(host, port)), None)

    def loopback(self) -> list[tuple[str, int]]:
        """(address, port) of every exact loopback entry (``127.0.0.1:8787``,
        ``localhost:8787``, ``[::1]:8787``): forwarded transparently into the sandbox."""
        found: list[tuple[str, int]] = []
        for pattern in self.patterns:
            if pattern.loopback:
                found += [(pattern.host, port) for port in sorted(pattern.ports)]
        return list(dict.fromkeys(found))

    def names(self) -> list[tuple[str, int]]:
        """(name, port) of every exact host name entry (no wildcard, no address)."""
        found: list[tuple[str, int]] = []
        for pattern in self.patterns:
            if not pattern.wildcard and pattern.address is None:
                found += [(pattern.host, port) for port in sorted(pattern.ports)]
        return list(dict.fromkeys(found))

    def denial(self, host: str, port: int) -> str:
        """The sentence a refused agent (and its operator) reads: what, and which key."""
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f'{shown} is not allowed; allow it with {self.key} = [..., "{shown}"]'


def network_setting(value: bool | Sequence[str], key: str = "network") -> bool | NetworkPolicy:
    """A configuration's ``network`` value as a sandbox takes it: ``True`` (the host's
    network), ``False`` (none) or a :class:`NetworkPolicy`. An empty list is ``False``:
    no proxy is started for an allowlist that allows nothing."""
    if isinstance(value, bool):
        return value
    return NetworkPolicy.parse(list(value), key) if value else False


def refused_address(text: str) -> str | None:
    """Why a name may not lead to address ``text``, or None when it may.

    Loopback (the host's own services, capataz's API among them), link-local (cloud
    metadata at 169.254.169.254), unspecified, multicast and reserved addresses are
    refused; private ranges are not (an internal registry is a reasonable thing to
    allow by name). An address reached this way must be allowed as an address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, hit in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
    ):
        if hit:
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
    return None


@dataclass(frozen=True)
class ConnectionRecord:
    """One connection an agent asked the proxy for, as the run's log keeps it.

    ``allowed`` is the verdict (the allowlist, then the address screening); ``error``
    says why an allowed connection still failed (no such name, refused, timed out)."""

    at: datetime
    method: str  # CONNECT, or the method of a plain HTTP request (GET, POST, ...)
    host: str  # normalised when it could be, else as sent (shortened, printable)
    port: int
    allowed: bool
    reason: str
    error: str = field(default="")

    @property
    def destination(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def line(self) -> str:
        """One log line: ``allowed api.example.com:443 (CONNECT; by 'api.example.com')``."""
        verdict = "allowed" if self.allowed else "denied"
        failed = f"; failed: {self.error}" if self.error else ""
        return f"{verdict} {self.destination} ({self.method}; {self.reason}{failed})"
