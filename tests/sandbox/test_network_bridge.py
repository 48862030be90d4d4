"""Network allowlists end to end: real bubblewrap, the real bridge inside, the real
proxy on the host, an HTTP server on the host's loopback, and a sandboxed client.

The client is the sandbox's own python3 (which the bridge needs anyway), so what it
does is spelled out in each test: connect directly (a client that ignores proxy
variables), through HTTP_PROXY (absolute-form) or through HTTPS_PROXY (CONNECT)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from capataz.config import parse_config
from capataz.errors import SandboxError
from capataz.gates.network import network_violations
from capataz.sandbox import BwrapSandbox, UnsandboxedSandbox
from capataz.sandbox.base import ExecOutcome
from capataz.sandbox.network import NetworkPolicy
from capataz.sandbox.network import bridge as bridge_module
from capataz.sandbox.network import proxy as proxy_module
from capataz.sandbox.network.bridge import find_python, plan_bridge
from capataz.sandbox.network.proxy import NetworkProxy

Run = Callable[..., object]

# Helpers the sandboxed client scripts start with.
CLIENT = r"""
import http.client, json, os, socket, sys, urllib.error, urllib.parse, urllib.request

def raw(host, port, path):
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()

def proxied(url):
    for name in ("NO_PROXY", "no_proxy"):  # through the proxy even for localhost
        os.environ.pop(name, None)
    handler = urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]})
    try:
        return urllib.request.build_opener(handler).open(url, timeout=60).read().decode()
    except urllib.error.HTTPError as exc:
        return "%d %s" % (exc.code, exc.read().decode().strip())

def tunnel(host, port, path):
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    c = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=60)
    c.set_tunnel(host, port)
    try:
        c.request("GET", path)
        return c.getresponse().read().decode()
    except OSError as exc:
        return str(exc)

def failure(host, port):
    try:
        socket.create_connection((host, port), timeout=60).close()
        return "connected"
    except OSError as exc:
        return errno_name(exc)

def errno_name(exc):
    import errno
    return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
"""


@contextmanager
def serving(bind: str = "127.0.0.1") -> Iterator[int]:
    """An HTTP server on the host answering ``hello <path>``; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((bind, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def origin() -> Iterator[int]:
    with serving() as port:
        yield port


def host_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def client(python3: str, body: str) -> list[str]:
    return [python3, "-c", CLIENT + body]


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("capataz-netproxy")]


def test_an_allowed_loopback_endpoint_is_reached_directly_and_through_the_proxy(
    run: Run, bwrap: BwrapSandbox, python3: str, origin: int
) -> None:
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin}"], key="[agents.a] network")
    ran = run(
        bwrap,
        client(
            python3,
            "print('no_proxy', os.environ['NO_PROXY'])\n"
            f"print('direct', raw('127.0.0.1', {origin}, '/direct'))\n"
            f"print('env', urllib.request.urlopen('http://localhost:{origin}/env', timeout=60).read().decode())\n"
            f"print('proxied', proxied('http://127.0.0.1:{origin}/proxied'))\n"
            f"print('tunnel', tunnel('127.0.0.1', {origin}, '/tunnel'))\n",
        ),
        network=policy,
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out == [
        "no_proxy localhost,127.0.0.1,::1",
        "direct hello /direct",  # no proxy involved: the bridge's transparent listener
        "env hello /env",  # NO_PROXY has localhost: direct, and still reaches the host
        "proxied hello /proxied",
        "tunnel hello /tunnel",
    ]
    connections = ran.result.connections
    assert [(c.method, c.host, c.port, c.allowed) for c in connections] == [
        ("CONNECT", "127.0.0.1", origin, True),
        ("CONNECT", "127.0.0.1", origin, True),
        ("GET", "127.0.0.1", origin, True),
        ("CONNECT", "127.0.0.1", origin, True),
    ]
    assert ran.result.leftover_processes == []  # the bridge is not the agent's leftover


def test_a_denied_host_is_refused_at_once_and_recorded(
    run: Run, bwrap: BwrapSandbox, python3: str, origin: int
) -> None:
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin}"], key="[agents.a] network")
    ran = run(
        bwrap,
        client(
            python3,
            "print(proxied('http://evil.example/steal'))\n"
            "print(tunnel('evil.example', 443, '/'))\n"
            f"print(tunnel('127.0.0.1', {origin + 1}, '/'))\n",  # allowed host, other port
        ),
        network=policy,
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out[0] == (
        '403 capataz: evil.example:80 is not allowed; allow it with [agents.a] network = [..., "evil.example:80"]'
    )
    assert ran.out[1:] == ["Tunnel connection failed: 403 Forbidden"] * 2
    denied = [(c.host, c.port, c.allowed) for c in ran.result.connections]
    assert denied == [
        ("evil.example", 80, False),
        ("evil.example", 443, False),
        ("127.0.0.1", origin + 1, False),
    ]
    violations = network_violations(
        ran.result, key="[agents.a] network", policy=parse_config("").policy
    )
    assert [v.details.split(":")[0] for v in violations] == [
        "denied connection to evil.example"
    ] * 2 + ["denied connection to 127.0.0.1"]


def test_nothing_but_the_bridge_leads_out(
    run: Run, bwrap: BwrapSandbox, python3: str, origin: int
) -> None:
    """No route: an address off the loopback fails at once (ENETUNREACH, not a timeout),
    the host's own address too, a loopback port the allowlist does not name is refused,
    and there is no resolver to ask."""
    address = host_address() or "192.0.2.1"
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin}"])
    ran = run(
        bwrap,
        client(
            python3,
            "print(failure('10.255.255.1', 80))\n"
            f"print(failure('{address}', {origin}))\n"
            f"print(failure('127.0.0.1', {origin + 1}))\n"
            "try:\n    socket.getaddrinfo('example.com', 443)\n    print('resolved')\n"
            "except OSError as exc:\n    print('no dns')\n",
        ),
        network=policy,
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out == ["ENETUNREACH", "ENETUNREACH", "ECONNREFUSED", "no dns"]
    assert ran.result.connections == []  # none of these ever reached the proxy


def test_exact_names_and_wildcards_are_resolved_on_the_host(
    run: Run, bwrap: BwrapSandbox, python3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models.test:PORT`` is reachable by name directly (its own address in the
    sandbox's /etc/hosts, when capataz is root) and through the proxy; a wildcard only
    through the proxy. The names are resolved by the proxy on the host (a hook stands in
    for DNS here), never inside the sandbox."""
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    asked: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        asked.append(host)
        return [address]

    monkeypatch.setattr(proxy_module, "default_resolver", resolve)
    with serving("0.0.0.0") as port:
        policy = NetworkPolicy.parse([f"models.test:{port}", f"*.models.test:{port}"])
        direct = f"print(raw('models.test', {port}, '/direct'))\n" if os.geteuid() == 0 else ""
        ran = run(
            bwrap,
            client(
                python3,
                direct + f"print(proxied('http://models.test:{port}/proxied'))\n"
                f"print(tunnel('a.b.models.test', {port}, '/wild'))\n"
                f"print(proxied('http://other.test:{port}/'))\n",
            ),
            network=policy,
        )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    expected = ["hello /proxied", "hello /wild", f"403 capataz: other.test:{port} is not allowed"]
    if os.geteuid() == 0:
        expected.insert(0, "hello /direct")
    assert [line.split("; allow")[0] for line in ran.out] == expected
    assert "other.test" not in asked  # a denied name is never even looked up
    assert set(asked) == {"models.test", "a.b.models.test"}


def test_the_bridge_runs_unprivileged_and_nothing_is_left(
    run: Run,
    bwrap: BwrapSandbox,
    python3: str,
    origin: int,
    host_pids: Callable[[str], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    made: list[Path] = []
    private_directory = proxy_module._private_directory

    def recorded() -> Path:
        made.append(private_directory())
        return made[-1]

    monkeypatch.setattr(proxy_module, "_private_directory", recorded)
    policy = NetworkPolicy.parse([f"127.0.0.1:{origin}", "api.example.com"])
    ran = run(
        bwrap,
        client(
            python3,
            "found = []\n"
            "for pid in os.listdir('/proc'):\n"
            "    if not pid.isdigit():\n        continue\n"
            "    try:\n"
            "        cmdline = open('/proc/%s/cmdline' % pid, 'rb').read()\n"
            "        status = open('/proc/%s/status' % pid).read()\n"
            "    except OSError:\n        continue\n"
            "    if b'capataz network bridge' in cmdline and pid not in ('1', str(os.getpid())):\n"
            "        fields = dict(l.split(':', 1) for l in status.splitlines() if ':' in l)\n"
            "        found.append((fields['Uid'].split()[0], fields['CapEff'].strip()))\n"
            "print(json.dumps({'bridges': found, 'me': os.getuid()}))\n",
        ),
        network=policy,
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    seen = json.loads(ran.out[0])
    assert seen["bridges"] == [[str(seen["me"]), "0000000000000000"]]  # the agent's uid, no caps
    assert ran.result.leftover_processes == []
    assert host_pids(f"127.0.0.1:{origin}") == []  # the bridge died with the sandbox
    assert proxy_threads() == []
    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert len(made) == 1
    assert not made[0].exists()  # the socket's directory is gone with the run


def test_a_run_sees_its_own_socket_and_no_other(
    run: Run, bwrap: BwrapSandbox, python3: str, origin: int
) -> None:
    with NetworkProxy(NetworkPolicy.parse([f"127.0.0.1:{origin}", "*.example.com"])) as other:
        ran = run(
            bwrap,
            client(
                python3,
                "print(sorted(os.listdir('/run/capataz/network')))\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "try:\n"
                f"    s.connect({str(other.socket_path)!r})\n    print('reached')\n"
                "except OSError as exc:\n    print(errno_name(exc))\n",
            ),
            network=NetworkPolicy.parse(["api.example.com"]),
        )
        assert other.records == []
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out == ["['proxy.sock']", "ENOENT"]


def test_full_and_no_network_are_unchanged(
    run: Run, bwrap: BwrapSandbox, python3: str, origin: int
) -> None:
    probe = client(python3, f"print(failure('127.0.0.1', {origin}), 'HTTP_PROXY' in os.environ)")
    assert run(bwrap, probe, network=False).out == ["ECONNREFUSED False"]  # its own loopback
    assert run(bwrap, probe, network=True).out == ["connected False"]


def test_the_unsandboxed_backend_refuses_an_allowlist(
    run: Run, unsandboxed: UnsandboxedSandbox
) -> None:
    with pytest.raises(SandboxError, match='sandbox = "none" cannot enforce'):
        run(
            unsandboxed,
            "true",
            network=NetworkPolicy.parse(["a.example"], key="[agents.a] network"),
        )


def test_the_bridge_plan() -> None:
    policy = NetworkPolicy.parse(
        ["127.0.0.1:3128", "localhost:8787", "api.example.com", "models.example:8443", "*.x.org"]
    )
    as_root = plan_bridge(policy, uid=200123, python="/usr/bin/python3")
    assert as_root.listeners == [
        ("127.0.0.1", 3129, None),  # the proxy port moves off an allowed loopback port
        ("127.0.0.1", 3128, "127.0.0.1:3128"),
        ("127.0.0.1", 8787, "127.0.0.1:8787"),
        ("127.0.0.2", 80, "api.example.com:80"),
        ("127.0.0.2", 443, "api.example.com:443"),
        ("127.0.0.3", 8443, "models.example:8443"),
    ]
    assert as_root.hosts is not None
    assert as_root.hosts.splitlines()[2:] == [
        "127.0.0.2 api.example.com",
        "127.0.0.3 models.example",
    ]
    assert as_root.caps == ["CAP_NET_BIND_SERVICE"]
    assert as_root.env["HTTPS_PROXY"] == as_root.env["all_proxy"] == "http://127.0.0.1:3129"
    assert as_root.env["NO_PROXY"] == "localhost,127.0.0.1,::1"
    script = as_root.script()
    assert script.startswith("bridge=$(cd / && exec /usr/bin/python3 -I -S -c ")
    assert script.endswith(" 3>&-) || exit 125\n")
    unprivileged = plan_bridge(policy, uid=None, python="/usr/bin/python3")
    assert unprivileged.hosts is None  # names are reached through the proxy variables only
    assert [entry[2] for entry in unprivileged.listeners] == [
        None,
        "127.0.0.1:3128",
        "127.0.0.1:8787",
    ]
    assert unprivileged.caps == []


def test_the_bridge_interpreter_is_a_system_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_python() in ("/usr/bin/python3", "/bin/python3", "/usr/local/bin/python3")
    monkeypatch.setattr(
        bridge_module, "_PYTHONS", ("/root/.pyenv/shims/python3", "/nonexistent/python3")
    )
    with pytest.raises(SandboxError, match="needs a system python3"):
        find_python()


def test_a_stopped_run_cuts_its_open_tunnels(run: Run, bwrap: BwrapSandbox, python3: str) -> None:
    """A run stopped mid-connection: the tunnel to the host is cut, the proxy's thread
    is gone; the run does not wait for the connection to end by itself."""
    accepted: list[socket.socket] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(120)
        port = server.getsockname()[1]
        waiter = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        waiter.start()
        ran = run(
            bwrap,
            client(
                python3, f"s = socket.create_connection(('127.0.0.1', {port}))\nprint(s.recv(1))\n"
            ),
            network=NetworkPolicy.parse([f"127.0.0.1:{port}"]),
            should_stop=lambda: bool(accepted),
        )
        waiter.join()
    assert ran.result.outcome is ExecOutcome.CANCELLED
    connection = accepted[0]
    connection.settimeout(120)
    assert connection.recv(1) == b""  # the proxy closed its side when the run ended
    connection.close()
    assert proxy_threads() == []
