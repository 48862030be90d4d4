"""The allowlist as the sandbox takes it: which entries are forwarded transparently,
which addresses a name may lead to, and what a refusal says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capataz.sandbox.network import (
    ConnectionRecord,
    NetworkPolicy,
    network_setting,
    refused_address,
)


def test_network_setting_maps_config_values() -> None:
    assert network_setting(True) is True
    assert network_setting(False) is False
    assert network_setting([]) is False  # nothing allowed: no proxy at all
    policy = network_setting(["a.example", "127.0.0.1:8787"], "[agents.a] network")
    assert isinstance(policy, NetworkPolicy)
    assert [p.text for p in policy.patterns] == ["a.example", "127.0.0.1:8787"]
    assert policy.key == "[agents.a] network"


def test_transparent_entries_are_exact_loopback_and_exact_names() -> None:
    policy = NetworkPolicy.parse(
        [
            "127.0.0.1:8787",
            "localhost:8787",  # the same endpoint, once
            "[::1]:9000",
            "api.example.com",
            "models.example:8443",
            "*.example.org",
            "10.0.0.5:8080",
        ]
    )
    assert policy.loopback() == [("127.0.0.1", 8787), ("::1", 9000)]
    assert policy.names() == [
        ("api.example.com", 80),
        ("api.example.com", 443),
        ("models.example", 8443),
    ]


def test_denial_names_the_destination_and_the_key() -> None:
    policy = NetworkPolicy.parse(["a.example"], key="[agents.claude] network")
    assert policy.denial("evil.example", 443) == (
        'evil.example:443 is not allowed; allow it with [agents.claude] network = [..., "evil.example:443"]'
    )
    assert '"[::2]:80"' in policy.denial("::2", 80)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.3.4.5", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("nonsense", "not an IP address"),
        ("10.1.2.3", None),  # private ranges are allowed by name (internal services)
        ("192.168.1.10", None),
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
    ],
)
def test_addresses_a_name_may_not_lead_to(address: str, refused: str | None) -> None:
    assert refused_address(address) == refused


def test_a_record_reads_as_one_log_line() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    denied = ConnectionRecord(at, "CONNECT", "evil.example", 443, False, "not in network")
    assert denied.line() == "denied evil.example:443 (CONNECT; not in network)"
    failed = ConnectionRecord(at, "GET", "::1", 80, True, "by '[::1]:80'", "Connection refused")
    assert failed.line() == "allowed [::1]:80 (GET; by '[::1]:80'; failed: Connection refused)"
