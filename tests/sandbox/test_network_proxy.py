"""The host-side allowlist proxy alone: a real unix socket, a real HTTP server on the
host's loopback, and requests written by hand the way a hostile agent would write them."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.helpers import wait_for

from capataz.errors import SandboxError
from capataz.sandbox.network import ConnectionRecord, NetworkPolicy
from capataz.sandbox.network import proxy as proxy_module
from capataz.sandbox.network.proxy import NetworkProxy


@dataclass
class Origin:
    """An HTTP server on the host that remembers what each request looked like."""

    port: int
    seen: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def serving(bind: str) -> Iterator[Origin]:
    origin = Origin(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            origin.seen.append(
                {
                    "path": self.path,
                    "host": self.headers.get("Host", ""),
                    "connection": self.headers.get("Connection", ""),
                    "secret": self.headers.get("Proxy-Authorization", ""),
                }
            )
            body = f"hello from {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((bind, 0), Handler)
    origin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with serving("127.0.0.1") as served:
        yield served


def host_address() -> str | None:
    """This machine's first non-loopback IPv4 address (to stand in for a remote one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def ask(path: Path, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection to the proxy; everything until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(60)
        client.connect(str(path))
        client.sendall(data)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("capataz-netproxy")]


def test_connect_to_an_allowed_loopback_endpoint_is_a_tunnel(origin: Origin) -> None:
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}"], key="[agents.a] network")
    with NetworkProxy(policy) as proxy:
        answer = ask(
            proxy.socket_path,
            f"CONNECT localhost:{origin.port} HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /tunnelled HTTP/1.0\r\n\r\n".encode(),
        )
        records = list(proxy.records)
    assert answer.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.0 200")
    assert answer.endswith(b"hello from /tunnelled")
    assert [(r.method, r.host, r.port, r.allowed) for r in records] == [
        ("CONNECT", "127.0.0.1", origin.port, True)
    ]


def test_absolute_form_is_forwarded_to_the_url_not_the_host_header(origin: Origin) -> None:
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}"])
    with NetworkProxy(policy) as proxy:
        answer = ask(
            proxy.socket_path,
            f"GET http://127.0.0.1:{origin.port}/p?q=1#frag HTTP/1.1\r\n"
            "Host: evil.example\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
            "Connection: keep-alive\r\n\r\n".encode(),
        )
    assert status(answer) == 200
    assert origin.seen == [
        {
            "path": "/p?q=1",
            "host": f"127.0.0.1:{origin.port}",
            "connection": "close",
            "secret": "",  # hop-by-hop: never forwarded to the origin
        }
    ]


@pytest.mark.parametrize(
    ("request_text", "host", "port"),
    [
        ("CONNECT evil.example:443 HTTP/1.1\r\n\r\n", "evil.example", 443),
        ("GET http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "evil.example", 80),
        # an allowed host on a port the allowlist does not name
        ("CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n", "127.0.0.1", None),
        ("GET http://127.0.0.1:{other}/ HTTP/1.1\r\n\r\n", "127.0.0.1", None),
        # the name's own port allowed, a wildcard only for subdomains
        ("CONNECT api.example.com:8080 HTTP/1.1\r\n\r\n", "api.example.com", 8080),
        ("CONNECT example.com:443 HTTP/1.1\r\n\r\n", "example.com", 443),
        ("CONNECT a.example.com.evil.net:443 HTTP/1.1\r\n\r\n", "a.example.com.evil.net", 443),
    ],
)
def test_denied_destinations_get_403_naming_host_and_key(
    origin: Origin, request_text: str, host: str, port: int | None
) -> None:
    other = origin.port + 1 if origin.port < 65535 else origin.port - 1
    wanted = other if port is None else port
    policy = NetworkPolicy.parse(
        [f"127.0.0.1:{origin.port}", "api.example.com:443", "*.example.com"],
        key="[agents.claude] network",
    )
    seen: list[ConnectionRecord] = []
    with NetworkProxy(policy, on_record=seen.append) as proxy:
        answer = ask(proxy.socket_path, request_text.format(other=other).encode())
    assert status(answer) == 403
    body = answer.split(b"\r\n\r\n", 1)[1].decode()
    assert f"{host}:{wanted} is not allowed" in body
    assert f'[agents.claude] network = [..., "{host}:{wanted}"]' in body
    assert [(r.host, r.port, r.allowed) for r in seen] == [(host, wanted, False)]
    assert seen[0].reason == "not in [agents.claude] network"
    assert origin.seen == []


@pytest.mark.parametrize(
    "request_text",
    [
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",  # origin-form: not a proxy request
        "GET https://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n",  # https must be tunnelled
        "GET http://127.0.0.1:{port}@evil.example/ HTTP/1.1\r\n\r\n",  # userinfo trick
        "GET http://evil.example\\@127.0.0.1:{port}/ HTTP/1.1\r\n\r\n",
        "GET http://127.0.0.1:{port}/ HTTP/1.1\nHost: evil.example\r\n\r\n",  # bare LF
        "GET  http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n",  # two spaces
        "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",  # no port
        "GET http://127.0.0.1:{port}/ HTTP/2.0\r\n\r\n",
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ],
)
def test_malformed_or_ambiguous_requests_get_400(origin: Origin, request_text: str) -> None:
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}"])
    with NetworkProxy(policy) as proxy:
        answer = ask(proxy.socket_path, request_text.format(port=origin.port).encode())
    assert status(answer) == 400
    assert origin.seen == []


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "127.0.0.1.nip.io."])
def test_addresses_in_disguise_are_not_names(origin: Origin, host: str) -> None:
    """Numeric forms the C resolver reads as 127.0.0.1 are refused as hosts, and a name
    that resolves to loopback is refused after resolution."""
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}", f"*.nip.io:{origin.port}"])
    with NetworkProxy(policy, resolve=lambda _host, _port: ["127.0.0.1"]) as proxy:
        answer = ask(proxy.socket_path, f"CONNECT {host}:{origin.port} HTTP/1.1\r\n\r\n".encode())
        records = list(proxy.records)
    assert status(answer) in (400, 403)
    assert [r.allowed for r in records] == [False]
    assert origin.seen == []


@pytest.mark.parametrize(
    ("resolved", "kind"),
    [
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["169.254.169.254"], "link-local"),
        (["0.0.0.0"], "unspecified"),
    ],
)
def test_a_name_never_leads_to_loopback_or_link_local(
    origin: Origin, resolved: list[str], kind: str
) -> None:
    policy = NetworkPolicy.parse([f"models.test:{origin.port}"], key="[agents.a] network")
    with NetworkProxy(policy, resolve=lambda _host, _port: resolved) as proxy:
        answer = ask(
            proxy.socket_path, f"CONNECT models.test:{origin.port} HTTP/1.1\r\n\r\n".encode()
        )
        records = list(proxy.records)
    assert status(answer) == 403
    assert f" {kind} address" in answer.decode()
    assert records[0].host == "models.test"
    assert not records[0].allowed
    assert f"resolves to {resolved[0]}" in records[0].reason
    assert origin.seen == []


def test_a_name_is_resolved_on_the_host_and_connected_by_address() -> None:
    """The name path: resolved here (the hook stands in for DNS), the loopback answer
    skipped, the screened address reached, and the agent's own Host header ignored."""
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with serving("0.0.0.0") as remote:
        asked: list[tuple[str, int]] = []

        def resolve(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return ["127.0.0.1", address]

        policy = NetworkPolicy.parse([f"*.models.test:{remote.port}"])
        with NetworkProxy(policy, resolve=resolve) as proxy:
            answer = ask(
                proxy.socket_path,
                f"GET http://a.models.test:{remote.port}/x HTTP/1.1\r\nHost: evil\r\n\r\n".encode(),
            )
            records = list(proxy.records)
        assert status(answer) == 200, answer
        assert asked == [("a.models.test", remote.port)]
        assert remote.seen[0]["host"] == f"a.models.test:{remote.port}"
        assert [(r.host, r.allowed, r.reason) for r in records] == [
            ("a.models.test", True, f"by '*.models.test:{remote.port}'")
        ]


def test_an_allowed_destination_that_fails_is_recorded_with_its_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connecting is refused
        policy = NetworkPolicy.parse([f"127.0.0.1:{port}", f"nowhere.test:{port}"])

        def resolve(_host: str, _port: int) -> list[str]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        with NetworkProxy(policy, resolve=resolve) as proxy:
            refused = ask(proxy.socket_path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            unknown = ask(
                proxy.socket_path, f"CONNECT nowhere.test:{port} HTTP/1.1\r\n\r\n".encode()
            )
            records = list(proxy.records)
    assert status(refused) == status(unknown) == 502
    assert [(r.allowed, bool(r.error)) for r in records] == [(True, True), (True, True)]
    assert "Name or service not known" in records[1].error


def test_a_broken_listener_does_not_break_the_proxy(origin: Origin) -> None:
    def broken(_record: ConnectionRecord) -> None:
        raise RuntimeError("listener bug")

    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}"])
    with NetworkProxy(policy, on_record=broken) as proxy:
        answer = ask(
            proxy.socket_path, f"GET http://127.0.0.1:{origin.port}/ HTTP/1.1\r\n\r\n".encode()
        )
    assert status(answer) == 200


def test_socket_is_private_and_everything_is_released_on_close(origin: Origin) -> None:
    """0700 directory, 0600 socket (owned by the sandbox uid when given); close cuts an
    open tunnel, joins the thread, removes the directory, and leaks no descriptor."""
    fds_before = set(os.listdir("/proc/self/fd"))
    owner = 54321 if os.geteuid() == 0 else None
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin.port}"])
    proxy = NetworkProxy(policy, owner=owner)
    path = proxy.start()
    try:
        directory = path.parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.stat().st_mode)
        if owner is not None:
            assert path.stat().st_uid == owner
        assert proxy_threads()
        tunnel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tunnel.settimeout(60)
        tunnel.connect(str(path))
        tunnel.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
        assert tunnel.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proxy.close()
    assert tunnel.recv(100) == b""  # cut by close, not left open
    tunnel.close()
    assert not directory.exists()
    assert proxy_threads() == []
    # The origin server's side of the tunnel is closed by its own thread, a moment later
    # on a busy machine: wait for it; a descriptor the proxy leaked would never go.
    wait_for(
        lambda: set(os.listdir("/proc/self/fd")) == fds_before,
        "every descriptor opened for the tunnel is closed",
    )
    proxy.close()  # twice is harmless


def test_close_without_start_and_a_failed_start_are_clean(
    origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    NetworkProxy(NetworkPolicy.parse(["a.example"])).close()

    def nowhere() -> Path:
        raise SandboxError("no private directory", fix="test")

    monkeypatch.setattr(proxy_module, "_private_directory", nowhere)
    with pytest.raises(SandboxError), NetworkProxy(NetworkPolicy.parse(["a.example"])):
        pass
    assert proxy_threads() == []


def test_records_are_bounded_but_the_listener_sees_every_one(
    origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy_module, "MAX_RECORDS", 2)
    seen: list[ConnectionRecord] = []
    with NetworkProxy(NetworkPolicy.parse(["a.example"]), on_record=seen.append) as proxy:
        for _ in range(3):
            ask(proxy.socket_path, b"CONNECT b.example:443 HTTP/1.1\r\n\r\n")
        kept, dropped = len(proxy.records), proxy.dropped
    assert (kept, dropped, len(seen)) == (2, 1, 3)


def test_a_silent_or_oversized_head_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_module, "HEAD_TIMEOUT", 0.2)
    with NetworkProxy(NetworkPolicy.parse(["a.example"])) as proxy:
        assert ask(proxy.socket_path, b"GET http://a.example/ HTTP/1.1\r\n") == b""
        assert ask(proxy.socket_path, b"X" * (proxy_module.HEAD_LIMIT + 10)) == b""
        assert proxy.records == []


def test_close_does_not_wait_for_a_client_that_stopped_reading() -> None:
    """An upstream that floods a client that never reads fills the proxy's buffers;
    closing must still return at once (buffers are dropped, not flushed)."""
    sent = [0]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(120)
        port = server.getsockname()[1]

        def flood() -> None:
            connection, _ = server.accept()
            with connection:
                block = b"x" * 65536
                try:
                    while sent[0] < 64 * 1024 * 1024:
                        sent[0] += connection.send(block)
                except OSError:
                    pass

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        proxy = NetworkProxy(NetworkPolicy.parse([f"127.0.0.1:{port}"]))
        path = proxy.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            wait_for(lambda: sent[0] >= 1024 * 1024, "the upstream filled the buffers")
            proxy.close()  # the client is still connected and still not reading
            assert proxy_threads() == []
        flooder.join()
