"""The sandbox side of a network allowlist: a small bridge from TCP to the proxy's socket.

The sandbox keeps ``--unshare-net``: its only interface is its own loopback. The
bridge, started by the sandbox's init before the agent, listens there and carries each
connection to the host-side proxy over the unix socket bound into the sandbox:

* on ``127.0.0.1:<proxy port>`` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY point there) it
  passes the bytes through unchanged; the proxy reads the CONNECT or absolute-form
  request and decides;
* on each exact loopback entry of the allowlist (``127.0.0.1:8787``) it listens at the
  same address and port and asks the proxy for ``CONNECT 127.0.0.1:8787`` itself, so a
  client that ignores proxy variables (or honours NO_PROXY for localhost, as it should)
  still reaches the host's endpoint;
* on each exact host name entry, when capataz runs as root, at an address of its own
  (127.0.0.2, 127.0.0.3, ...) that the sandbox's /etc/hosts gives that name, on each of
  its ports, the same way: clients that ignore proxy variables reach allowed names too.

The bridge is a ``python3 -I -c`` program: its code is a constant of capataz passed on
the command line, its interpreter a system one on the read-only root; nothing of it
comes from a place the agent can write. As root it binds its sockets (ports under 1024
need CAP_NET_BIND_SERVICE, granted to the sandbox's init for that), then drops to the
run's sandbox uid before it reads a byte from anyone, and checks that no capability
survived. It is a single-threaded asyncio process: one process of the run's process
budget. It lives in the run's PID namespace and dies with it. Whatever it forwards, the
host-side proxy checks: the bridge is a convenience, not a security boundary, and the
agent gains nothing by talking to the socket itself.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from capataz.errors import SandboxError
from capataz.sandbox.mounts import MASKED
from capataz.sandbox.network.policy import NetworkPolicy

__all__ = [
    "BRIDGE",
    "PROXY_PORT",
    "SOCKET_INSIDE",
    "BridgePlan",
    "find_python",
    "plan_bridge",
]

SOCKET_INSIDE = "/run/capataz/network/proxy.sock"
PROXY_PORT = 3128  # inside the sandbox's own network namespace; moved if an entry takes it
_PYTHONS = ("/usr/bin/python3", "/bin/python3", "/usr/local/bin/python3")
_FIRST_NAME_ADDRESS = 2  # 127.0.0.2: 127.0.0.1 stays the sandbox's (and forwarded ports')
_MAX_NAMES = 250

# Runs inside the sandbox as `python3 -I -S -c BRIDGE CONFIG` (Python 3.8+, stdlib only).
# Binds every listener, drops privileges, forks: the parent prints the child's pid and
# exits once the listeners accept connections, so the agent never races the bridge; the
# child loads asyncio only then (the slow part), while the agent starts.
BRIDGE = r"""
import json, os, socket, sys

def fail(message):
    sys.stderr.write("capataz network bridge: %s\n" % message)
    sys.exit(1)

def start():
    config = json.loads(sys.argv[1])
    listeners = []
    for host, port, target in config["listen"]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if target is None:
                fail("cannot listen on %s:%d: %s" % (host, port, exc.strerror))
            sys.stderr.write("capataz network bridge: cannot listen on %s:%d (%s); "
                             "%s is reachable through the proxy only\n"
                             % (host, port, exc.strerror, target))
            continue
        sock.setblocking(False)
        listeners.append((sock, None if target is None else target.encode("ascii")))
    uid = config["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            fail("still uid %d, not %d" % (os.getuid(), uid))
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:") and int(line.split()[1], 16):
                fail("capabilities survived the drop to uid %s" % uid)
    pid = os.fork()
    if pid:
        sys.stdout.write("%d\n" % pid)
        sys.stdout.flush()
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return config["socket"], listeners

# Listening already: connections wait in the backlog while the child loads asyncio.
path, listeners = start()
import asyncio, struct

async def pump(source, target):
    try:
        while True:
            chunk = await source.read(65536)
            if not chunk:
                break
            target.write(chunk)
            await target.drain()
        if target.can_write_eof():
            target.write_eof()
        return True
    except OSError:
        return False

async def handle(reader, writer, target):
    upstream = None
    try:
        up_reader, upstream = await asyncio.open_unix_connection(path)
        if target is not None:
            upstream.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
            head = await up_reader.readuntil(b"\r\n\r\n")
            if head.split(b" ", 2)[1:2] != [b"200"]:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
        pumps = {asyncio.ensure_future(pump(reader, upstream)),
                 asyncio.ensure_future(pump(up_reader, writer))}
        while pumps:
            done, pumps = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if not all(task.result() for task in done):
                break
        for task in pumps:
            task.cancel()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
        if upstream is not None:
            upstream.close()

async def serve():
    servers = []
    for sock, target in listeners:
        def accepted(reader, writer, target=target):
            return handle(reader, writer, target)
        servers.append(await asyncio.start_server(accepted, sock=sock))
    await asyncio.Event().wait()

asyncio.run(serve())
"""


@dataclass(frozen=True)
class BridgePlan:
    """What one run's sandbox needs for its allowlist: the bridge's listeners, the
    environment of the command, the sandbox's /etc/hosts (None: left as the host's) and
    the init script line that starts the bridge."""

    python: str
    listeners: list[tuple[str, int, str | None]]  # (address, port, CONNECT target or None)
    env: dict[str, str]
    hosts: str | None
    uid: int | None
    socket: str = SOCKET_INSIDE
    caps: list[str] = field(default_factory=list)  # for the init, as --cap-add names

    def script(self) -> str:
        """Init-script lines (POSIX sh): start the bridge, remember its pid in $bridge
        (the init does not report it as a leftover), stop the sandbox (125) if it fails.
        Runs before the init changes into the workspace and with the report pipe closed."""
        config = json.dumps(
            {"socket": self.socket, "uid": self.uid, "listen": self.listeners},
            separators=(",", ":"),
        )
        command = shlex.join([self.python, "-I", "-S", "-c", BRIDGE, config])
        return f"bridge=$(cd / && exec {command} 3>&-) || exit 125\n"


def find_python(hidden: Sequence[Path] = ()) -> str:
    """A system python3 for the bridge, visible and unwritable inside the sandbox: on
    the read-only root, not under a masked directory (a pyenv in /root is invisible
    there) or a hidden one; PATH is not consulted (it may name the workspace)."""
    masked = [*MASKED, *(str(Path(p).resolve()) for p in hidden)]
    for candidate in _PYTHONS:
        path = Path(candidate)
        if not os.access(path, os.X_OK):
            continue
        real = str(path.resolve())
        if not any(real == m or real.startswith(m + "/") for m in masked):
            return candidate
    raise SandboxError(
        "a network allowlist needs a system python3 (/usr/bin/python3) inside the sandbox "
        "for its bridge, and none was found",
        fix="install python3 from the distribution (apt install python3-minimal), or use "
        "network = true / false",
    )


def _proxy_port(taken: set[int]) -> int:
    port = PROXY_PORT
    while port in taken:
        port += 1
    return port


def plan_bridge(
    policy: NetworkPolicy, *, uid: int | None, python: str, names: bool | None = None
) -> BridgePlan:
    """The bridge for ``policy``. ``uid`` is the sandbox uid when capataz is root (the
    bridge drops to it). Exact host names get addresses of their own in /etc/hosts only
    when ``names`` (default: when root, since their ports are usually below 1024)."""
    loopback = policy.loopback()
    port = _proxy_port({p for address, p in loopback if address == "127.0.0.1"})
    proxy = f"http://127.0.0.1:{port}"
    listeners: list[tuple[str, int, str | None]] = [("127.0.0.1", port, None)]
    for address, entry_port in loopback:
        target = f"[{address}]:{entry_port}" if ":" in address else f"{address}:{entry_port}"
        listeners.append((address, entry_port, target))
    hosts = None
    if uid is not None if names is None else names:
        numbers: dict[str, int] = {}
        for name, _ in policy.names():
            if name not in numbers and len(numbers) < _MAX_NAMES:
                numbers[name] = _FIRST_NAME_ADDRESS + len(numbers)
        for name, entry_port in policy.names():
            if name in numbers:
                listeners.append((f"127.0.0.{numbers[name]}", entry_port, f"{name}:{entry_port}"))
        if numbers:
            lines = ["127.0.0.1 localhost capataz", "::1 localhost ip6-localhost ip6-loopback"]
            lines += [f"127.0.0.{number} {name}" for name, number in numbers.items()]
            hosts = "\n".join(lines) + "\n"
    # Root's bridge binds before it drops to the sandbox uid; that needs this capability
    # for ports below 1024 (the init has it, the command never does).
    caps = ["CAP_NET_BIND_SERVICE"] if any(p < 1024 for _, p, _ in listeners) else []
    no_proxy = "localhost,127.0.0.1,::1"
    env = {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "ALL_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "all_proxy": proxy,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }
    return BridgePlan(python, listeners, env, hosts, uid, caps=caps)
