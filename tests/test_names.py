"""Host patterns: what an allowlist entry may say, and how a destination an agent asks
for is compared with it (one canonical form for both, never a look-alike)."""

from __future__ import annotations

import pytest

from capataz.names import (
    DEFAULT_PORTS,
    HostPatternError,
    normalise_host,
    parse_host_pattern,
    split_host_port,
)


@pytest.mark.parametrize(
    ("text", "host", "ports", "wildcard"),
    [
        ("api.anthropic.com:443", "api.anthropic.com", {443}, False),
        ("API.Example.COM.", "api.example.com", DEFAULT_PORTS, False),
        ("*.example.com", "example.com", DEFAULT_PORTS, True),
        ("*.example.com:8443", "example.com", {8443}, True),
        ("127.0.0.1:8787", "127.0.0.1", {8787}, False),
        ("localhost:8787", "127.0.0.1", {8787}, False),
        ("[::1]:8787", "::1", {8787}, False),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1", {80}, False),
        ("10.0.0.5", "10.0.0.5", DEFAULT_PORTS, False),
    ],
)
def test_patterns_parse_to_one_canonical_form(
    text: str, host: str, ports: set[int], wildcard: bool
) -> None:
    pattern = parse_host_pattern(text)
    assert (pattern.host, set(pattern.ports), pattern.wildcard) == (host, ports, wildcard)
    assert pattern.text == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("https://api.example.com/v1", "drop the scheme: 'api.example.com'"),
        ("*", "would allow every host"),
        ("*:443", "would allow every host"),
        ("*.com", "too broad"),
        ("a.*.example.com", "only a leading '*.' wildcard"),
        ("*.10.0.0.1", "not to IP addresses"),
        ("::1:8787", "needs brackets"),
        ("127.1", "not a host name or IP address"),
        ("2130706433", "not a host name or IP address"),
        ("0x7f.1", "not a host name or IP address"),
        ("api.example.com:0", "no valid port"),
        ("api.example.com:65536", "no valid port"),
        ("api.example.com:", "no valid port"),
        ("api.example.com:https", "no valid port"),
        ("user@api.example.com", "not a host[:port] pattern"),
        (" api.example.com", "not a host[:port] pattern"),
        ("", "not a host[:port] pattern"),
        ("bad_-.example.com", "not a host name"),
        ("é.example.com", "not a host name"),
        ("[fe80::1%eth0]:80", "not a host name"),
    ],
)
def test_bad_patterns_say_what_to_write(text: str, problem: str) -> None:
    with pytest.raises(HostPatternError) as caught:
        parse_host_pattern(text)
    assert problem in str(caught.value)
    assert repr(text) in str(caught.value)
    assert caught.value.fix


@pytest.mark.parametrize(
    ("pattern", "host", "port", "allowed"),
    [
        ("*.example.com", "a.example.com", 443, True),
        ("*.example.com", "a.b.example.com", 80, True),
        ("*.example.com", "example.com", 443, False),
        ("*.example.com", "a.example.com", 8443, False),
        ("*.example.com", "evilexample.com", 443, False),
        ("*.example.com", "a.example.com.evil.net", 443, False),
        ("*.example.com:8443", "a.example.com", 8443, True),
        ("*.example.com:8443", "a.example.com", 443, False),
        ("api.example.com", "api.example.com", 443, True),
        ("api.example.com", "api.example.com", 22, False),
        ("api.example.com:443", "api.example.com", 80, False),
        ("127.0.0.1:8787", "127.0.0.1", 8787, True),
        ("127.0.0.1:8787", "127.0.0.1", 8788, False),
        ("localhost:8787", "127.0.0.1", 8787, True),
    ],
)
def test_matching(pattern: str, host: str, port: int, allowed: bool) -> None:
    assert parse_host_pattern(pattern).matches(host, port) is allowed


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Api.Example.Com.", "api.example.com"),
        ("LOCALHOST", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("127.1", None),
        ("0177.0.0.1", None),
        ("017700000001", None),
        ("a..b", None),
        ("[api.example.com]", None),
        ("a" * 64 + ".com", None),
        ("ex ample.com", None),
    ],
)
def test_requested_hosts_are_normalised_or_refused(text: str, canonical: str | None) -> None:
    assert normalise_host(text) == canonical


def test_split_host_port() -> None:
    assert split_host_port("a.example:8080") == ("a.example", 8080)
    assert split_host_port("[::1]:80") == ("[::1]", 80)
    assert split_host_port("a.example") == ("a.example", None)
    with pytest.raises(HostPatternError):
        split_host_port("[::1]x")
