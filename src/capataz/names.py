"""Identifiers capataz accepts from users and agents, checked in one place.

Task ids name directories and git refs; secret names become environment variables;
host patterns (``api.example.com:443``, ``*.example.com``, ``127.0.0.1:8787``) say
where a sandboxed agent may connect. Each is kept to a small alphabet and matched whole
(``fullmatch``: a ``$`` would let a trailing newline through). Host names that a request
from an agent carries go through the same :func:`normalise_host` as the patterns, so
the two are compared in one canonical form and never by what they merely look like."""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

from capataz.errors import CapatazError, TaskError

__all__ = [
    "DEFAULT_PORTS",
    "HostPattern",
    "HostPatternError",
    "SecretNameError",
    "check_secret_name",
    "new_task_id",
    "normalise_host",
    "parse_host_pattern",
    "split_host_port",
    "validate_task_id",
]

_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SecretNameError(CapatazError):
    """A secret name that cannot be an environment variable's."""


def validate_task_id(task_id: str) -> str:
    """Task ids name directories and git refs, so they are kept to a safe alphabet."""
    if not _TASK_ID.fullmatch(task_id):
        raise TaskError(
            f"invalid task id {task_id!r}",
            fix="use 1-64 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return task_id


def new_task_id(now: datetime) -> str:
    """A fresh task id: sortable by creation time (people and ``task list`` read them
    in order) and random enough that two processes adding at once never clash."""
    return f"t-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def check_secret_name(name: str) -> str:
    """Secrets become environment variables: their names must be valid ones."""
    if not _NAME.fullmatch(name):
        raise SecretNameError(
            f"{name!r} is not a secret name",
            fix="use letters, digits and underscores, not starting with a digit "
            "(e.g. OPENAI_API_KEY)",
        )
    return name


# A pattern without a port allows plain and TLS HTTP, which is what "this host" means to
# nearly every client; anything else (a database, a model server) names its port.
DEFAULT_PORTS = frozenset({80, 443})
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")


class HostPatternError(CapatazError):
    """A network allowlist entry, or a destination an agent asked for, that is not a
    host[:port] capataz can compare safely."""


@dataclass(frozen=True)
class HostPattern:
    """One parsed entry of a network allowlist.

    ``host`` is canonical: a lowercase name without its trailing dot, the suffix after
    ``*.`` of a wildcard, or an IP address as :mod:`ipaddress` writes it (``localhost``
    is written ``127.0.0.1``: that is what it means to the loopback forwarding)."""

    text: str  # as the user wrote it, for messages
    host: str
    ports: frozenset[int]
    wildcard: bool = False

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The IP address this pattern names literally, or None for a name."""
        if self.wildcard:
            return None
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def loopback(self) -> bool:
        address = self.address
        return address is not None and address.is_loopback

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (already through :func:`normalise_host`) and ``port`` are
        allowed by this entry. A wildcard needs at least one more label: ``*.a.com``
        allows ``x.a.com`` and ``x.y.a.com``, never ``a.com`` itself."""
        if port not in self.ports:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def normalise_host(text: str) -> str | None:
    """``text`` in canonical form, or None when it is neither a host name nor an IP
    address (IPv6 with or without brackets).

    Refused as names: anything the C resolver would read as an IPv4 address in one of
    its odd forms (``127.1``, ``2130706433``, ``0x7f.1``), so that a name can never be
    an address in disguise. IPv4-mapped IPv6 addresses become their IPv4 address, for
    the same reason.
    """
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not host or "%" in host or not host.isascii():
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.compressed
    if host != text:  # brackets around something that is not an IPv6 address
        return None
    name = host.lower().removesuffix(".")
    if name == "localhost":
        return "127.0.0.1"
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None
    try:
        socket.inet_aton(name)
    except OSError:
        return name
    return None


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host`` and ``port`` of ``host[:port]`` (``[v6 address]:port`` for IPv6); the
    port is None when absent. Raises :class:`HostPatternError` on anything else."""
    fix = "write host[:port], e.g. 'api.example.com:443' or '[::1]:8787'"
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text[: end + 1], text[end + 1 :]) if end > 0 else ("", "")
        if not host or (rest and not rest.startswith(":")):
            raise HostPatternError(f"{text!r} is not a host[:port]", fix=fix)
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise HostPatternError(
            f"{text!r}: an IPv6 address needs brackets", fix="write it as '[::1]:8787'"
        )
    else:
        host, port_text = text, None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise HostPatternError(f"{text!r} has no valid port (1-65535)", fix=fix)
    return host, int(port_text)


def parse_host_pattern(text: str) -> HostPattern:
    """One allowlist entry: ``host``, ``host:port``, ``*.domain[:port]`` or an IP
    address (``127.0.0.1:8787``, ``[::1]:8787``). Without a port it allows 80 and 443.

    Raises :class:`HostPatternError` naming the entry and the form it should take."""
    fix = "write host[:port], e.g. 'api.example.com', '*.example.com' or '127.0.0.1:8787'"
    if not text or text.strip() != text or any(c.isspace() for c in text):
        raise HostPatternError(f"{text!r} is not a host[:port] pattern", fix=fix)
    if "://" in text:
        bare = text.split("://", 1)[1].split("/", 1)[0]
        raise HostPatternError(
            f"{text!r} is a URL, not a host[:port] pattern", fix=f"drop the scheme: {bare!r}"
        )
    if any(c in text for c in "/?#@"):
        raise HostPatternError(f"{text!r} is not a host[:port] pattern", fix=fix)
    host, port = split_host_port(text)
    ports = DEFAULT_PORTS if port is None else frozenset({port})
    wildcard = host.startswith("*.")
    base = host[2:] if wildcard else host
    if base in ("", "*") or host == "*":
        raise HostPatternError(
            f"{text!r} would allow every host",
            fix="list the hosts, or use network = true for the full network",
        )
    if "*" in base:
        raise HostPatternError(
            f"{text!r}: only a leading '*.' wildcard is supported",
            fix="write e.g. '*.example.com' (one or more labels before example.com)",
        )
    canonical = normalise_host(base)
    if canonical is None:
        raise HostPatternError(f"{text!r} is not a host name or IP address", fix=fix)
    pattern = HostPattern(text=text, host=canonical, ports=ports, wildcard=wildcard)
    if wildcard and HostPattern(text, canonical, ports).address is not None:
        raise HostPatternError(
            f"{text!r}: a wildcard applies to names, not to IP addresses",
            fix="list each address with its port, e.g. '10.0.0.5:8080'",
        )
    if wildcard and "." not in canonical:
        raise HostPatternError(
            f"{text!r} is too broad a wildcard",
            fix="name at least a domain and its suffix, e.g. '*.example.com'",
        )
    return pattern
