"""The host side of a network allowlist: an HTTP proxy on a private unix socket.

One proxy per run. It listens on a unix socket in a fresh 0700 directory (under
``/run/capataz/network`` or ``/tmp``, both hidden from every sandbox by a tmpfs), and
only the socket file itself is bound into the run's sandbox, so a run reaches its own
proxy and no other. When capataz runs as root the socket belongs to the run's sandbox
uid, mode 0600.

It speaks two forms of HTTP proxying, and nothing else:

* ``CONNECT host:port``: checked, then a blind tunnel (TLS, or anything else);
* an absolute-form request (``GET http://host:port/path``): checked, then forwarded
  with the URL's own ``Host`` and ``Connection: close``; the client's ``Host`` header is
  dropped, so the destination checked is the destination reached.

Everything the agent sends is untrusted input: the head is size- and time-limited, the
host goes through :func:`capataz.names.normalise_host`, names are resolved here and the
addresses screened (:func:`capataz.sandbox.network.policy.refused_address`), and the
proxy connects to exactly the address it screened. A refusal is a ``403`` whose body
names the host and the configuration key to change. Each connection asked for becomes a
:class:`ConnectionRecord`, passed to ``on_record`` and kept (the first
:data:`MAX_RECORDS`) in :attr:`NetworkProxy.records`.

It runs an asyncio loop in one thread of its own (plus a small pool for name lookups),
so it never blocks the run; :meth:`NetworkProxy.close` cancels every connection, joins
the thread and removes the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from capataz.errors import SandboxError
from capataz.names import HostPatternError, normalise_host, split_host_port
from capataz.sandbox.network.policy import ConnectionRecord, NetworkPolicy, refused_address

__all__ = ["MAX_RECORDS", "NetworkProxy", "Resolver", "default_resolver"]

Resolver = Callable[[str, int], list[str]]  # (name, port) -> IP addresses, best first

MAX_RECORDS = 1000  # kept on the proxy; on_record still sees every one
MAX_CONNECTIONS = 128  # at once; more get a 503 (the host's fds are not the agent's)
HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 15.0
CHUNK = 64 * 1024
_SOCKET_NAME = "proxy.sock"
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOP_BY_HOP = {
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
}


def default_resolver(host: str, port: int) -> list[str]:
    """The host's resolver (getaddrinfo), addresses in its order, without repeats."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class _Refusal(Exception):
    """A request answered with an HTTP error instead of a connection."""

    def __init__(self, status: str, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


def _shown(text: str) -> str:
    """A host as the agent sent it, safe and short enough for a log line."""
    printable = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return printable[:255]


def _private_directory() -> Path:
    """A fresh 0700 directory for one run's socket, under a path every sandbox masks
    (so no run can reach another run's socket) and short enough for AF_UNIX."""
    candidates = [Path("/run/capataz/network"), Path("/tmp", f"capataz-network-{os.geteuid()}")]
    for base in candidates:
        try:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = base.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            base.chmod(0o700)
            return Path(tempfile.mkdtemp(prefix="run-", dir=base))
    raise SandboxError(
        "no private directory for the network proxy's socket (/run/capataz or /tmp)",
        fix="make /run/capataz or /tmp writable for the user running capataz",
    )


class NetworkProxy:
    """One run's allowlist proxy; a context manager (``with NetworkProxy(...) as p``)."""

    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        owner: int | None = None,
        resolve: Resolver | None = None,
        on_record: Callable[[ConnectionRecord], None] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.policy = policy
        self.owner = owner  # the sandbox uid that may connect (None: our own uid)
        self.records: list[ConnectionRecord] = []
        self.dropped = 0  # records beyond MAX_RECORDS (on_record still saw them)
        self._resolve = resolve or default_resolver
        self._on_record = on_record
        self._connect_timeout = connect_timeout
        self._directory: Path | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.StreamWriter] = set()  # every open connection, both ends
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="capataz-netproxy-dns")
        self._resolving = 0
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> Path:
        if self._directory is None:
            raise RuntimeError("the proxy is not started")
        return self._directory / _SOCKET_NAME

    def __enter__(self) -> NetworkProxy:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Path:
        """Listen and serve; returns the socket's path once connections are accepted."""
        self._directory = _private_directory()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            if self.owner is not None:
                os.chown(self.socket_path, self.owner, self.owner)
            self.socket_path.chmod(0o600)
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            self.close()
            raise SandboxError(
                f"cannot listen on {self.socket_path} for the network proxy: {exc}",
                fix="check that /run/capataz or /tmp is writable and not full",
            ) from exc
        self._thread = threading.Thread(
            target=self._serve, args=(listener,), name="capataz-netproxy", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self.close()
            raise SandboxError(
                f"the network proxy did not start: {self._failure}",
                fix="this is a bug in capataz; please report it",
            )
        return self.socket_path

    def close(self) -> None:
        """Stop serving: every tunnel is cut, the thread joined, the directory removed.
        Safe to call twice, and from a ``finally`` whatever state ``start`` reached."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and thread is not None and thread.is_alive():
            with suppress(RuntimeError):  # the loop closed on its own meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join()
        with self._lock:
            busy = self._resolving > 0
        # A lookup stuck in the C resolver cannot be interrupted: its thread is left to
        # finish on its own (bounded by the resolver's timeout) instead of blocking.
        self._pool.shutdown(wait=not busy, cancel_futures=True)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._thread = None

    # -- the loop thread -------------------------------------------------------------

    def _serve(self, listener: socket.socket) -> None:
        try:
            asyncio.run(self._main(listener))
        except BaseException as exc:  # noqa: BLE001 - reported to start() or dropped at close
            self._failure = exc
        finally:
            listener.close()
            self._ready.set()

    async def _main(self, listener: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._accepted, sock=listener, limit=HEAD_LIMIT)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            # Aborted, not closed: a close waits to flush what a client that stopped
            # reading never takes, and the run's end must not wait for anyone.
            for stream in list(self._streams):
                stream.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - asyncio always runs callbacks in a task
            writer.close()
            return
        self._tasks.add(task)
        self._streams.add(writer)
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                await _answer(writer, "503 Service Unavailable", "capataz: too many connections\n")
                return
            await self._serve_one(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the agent hung up, sent garbage or nothing: nothing to answer
        finally:
            self._tasks.discard(task)
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()
            self._streams.discard(writer)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        try:
            method, target, headers = _parse_head(head)
            host_text, port = _destination(method, target)
        except _Refusal as refusal:
            await _answer(writer, refusal.status, refusal.body)
            return
        shown = method.decode("ascii")
        try:
            upstream = await self._open(shown, host_text, port)
        except _Refusal as refusal:
            await _answer(writer, refusal.status, refusal.body)
            return
        up_reader, up_writer = upstream
        self._streams.add(up_writer)
        try:
            if method == b"CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                up_writer.write(_forwarded_head(method, target, headers))
            await _splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            with suppress(Exception):
                await up_writer.wait_closed()
            self._streams.discard(up_writer)

    async def _open(
        self, method: str, host_text: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check, resolve, screen and connect, recording the outcome either way."""
        host = normalise_host(host_text)
        if host is None:
            self._record(
                method, _shown(host_text), port, allowed=False, reason="not a host name or address"
            )
            raise _Refusal("400 Bad Request", f"capataz: {_shown(host_text)!r} is not a host\n")
        pattern = self.policy.allowing(host, port)
        if pattern is None:
            denial = self.policy.denial(host, port)
            self._record(method, host, port, allowed=False, reason=f"not in {self.policy.key}")
            raise _Refusal("403 Forbidden", f"capataz: {denial}\n")
        reason = f"by {pattern.text!r}"
        if pattern.address is not None:
            addresses = [host]
        else:
            try:
                addresses = await self._lookup(host, port)
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: bad IDNA
                error = f"no address for {host}: {_oserror(exc)}"
                self._record(method, host, port, allowed=True, reason=reason, error=error)
                raise _Refusal("502 Bad Gateway", f"capataz: {error}\n") from None
            screened = [a for a in addresses if refused_address(a) is None]
            if not screened:
                why = refused_address(addresses[0]) if addresses else "no address"
                detail = f"{host} resolves to {addresses[0] if addresses else '?'}, {why}"
                self._record(method, host, port, allowed=False, reason=detail)
                raise _Refusal(
                    "403 Forbidden",
                    f"capataz: {detail}; a name may not lead there: allow the address itself "
                    f"in {self.policy.key}\n",
                )
            addresses = screened
        try:
            opened = await self._connect(addresses, port)
        except (OSError, TimeoutError) as exc:
            error = _oserror(exc)
            self._record(method, host, port, allowed=True, reason=reason, error=error)
            raise _Refusal("502 Bad Gateway", f"capataz: {host}:{port}: {error}\n") from None
        self._record(method, host, port, allowed=True, reason=reason)
        return opened

    async def _lookup(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()

        def counted() -> list[str]:
            with self._lock:
                self._resolving += 1
            try:
                return self._resolve(host, port)
            finally:
                with self._lock:
                    self._resolving -= 1

        async with asyncio.timeout(RESOLVE_TIMEOUT):
            return await loop.run_in_executor(self._pool, counted)

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first of ``addresses`` that answers; the socket is made
        here from the literal address, so nothing is looked up again."""
        loop = asyncio.get_running_loop()
        failure: BaseException = OSError("no address")
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await loop.sock_connect(sock, (address, port))
                return await asyncio.open_connection(sock=sock, limit=CHUNK)
            except (OSError, TimeoutError) as exc:
                sock.close()
                failure = exc
        raise failure

    def _record(
        self, method: str, host: str, port: int, *, allowed: bool, reason: str, error: str = ""
    ) -> None:
        record = ConnectionRecord(datetime.now(UTC), method, host, port, allowed, reason, error)
        if len(self.records) < MAX_RECORDS:
            self.records.append(record)
        else:
            self.dropped += 1
        if self._on_record is not None:
            with suppress(Exception):  # a broken listener must not break the agent's network
                self._on_record(record)


def _oserror(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _parse_head(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(method, target, headers) of a request head, strictly: CRLF lines only, a token
    method, one space between the three parts, HTTP/1.x, well-formed header lines."""
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise _Refusal("400 Bad Request", "capataz: lines must end with CRLF\n")
    parts = lines[0].split(b" ")
    if (
        len(parts) != 3
        or not _TOKEN.fullmatch(parts[0])
        or parts[2]
        not in (
            b"HTTP/1.1",
            b"HTTP/1.0",
        )
    ):
        raise _Refusal("400 Bad Request", "capataz: not an HTTP/1.x request line\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refusal("400 Bad Request", "capataz: a malformed header line\n")
        headers.append((name, value.strip()))
    return parts[0], parts[1], headers


def _destination(method: bytes, target: bytes) -> tuple[str, int]:
    """(host as sent, port) of a CONNECT target or an absolute ``http://`` URL."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise _Refusal("400 Bad Request", "capataz: the target is not ASCII\n") from None
    if method == b"CONNECT":
        authority, default = text, None
    elif text.lower().startswith("http://"):
        authority = re.split(r"[/?#]", text[7:], maxsplit=1)[0]
        default = 80
    else:
        raise _Refusal(
            "400 Bad Request",
            "capataz: this is a proxy: send CONNECT host:port, or an absolute http:// URL\n",
        )
    if "@" in authority or "\\" in authority:
        raise _Refusal("400 Bad Request", "capataz: credentials in a URL are not forwarded\n")
    try:
        host, port = split_host_port(authority)
    except HostPatternError as exc:
        raise _Refusal("400 Bad Request", f"capataz: {exc.message}\n") from None
    if port is None:
        if default is None:
            raise _Refusal("400 Bad Request", "capataz: CONNECT needs host:port\n")
        port = default
    return host, port


def _forwarded_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request as the origin server gets it: origin-form path, the URL's own
    authority as ``Host`` (whatever ``Host`` the client sent is dropped), no hop-by-hop
    headers, ``Connection: close`` (one request per connection, nothing to reuse)."""
    rest = target[len(b"http://") :]
    cut = min((i for i in map(rest.find, (b"/", b"?", b"#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].split(b"#", 1)[0]
    if not path.startswith(b"/"):
        path = b"/" + path
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + authority]
    lines += [name + b": " + value for name, value in headers if name.lower() not in _HOP_BY_HOP]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _answer(writer: asyncio.StreamWriter, status: str, body: str) -> None:
    data = body.encode("utf-8", errors="replace")
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode("ascii")
        + data
    )
    with suppress(OSError):
        await writer.drain()


async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> bool:
    """Copy until end of file (then half-close ``target``): True; False on an error."""
    try:
        while chunk := await source.read(CHUNK):
            target.write(chunk)
            await target.drain()
        if target.can_write_eof():
            target.write_eof()
    except OSError:
        return False
    return True


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Both directions at once until both ended; a broken one ends the other too."""
    pumps = {
        asyncio.ensure_future(_pump(reader, up_writer)),
        asyncio.ensure_future(_pump(up_reader, writer)),
    }
    try:
        while pumps:
            done, pumps = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if not all(task.result() for task in done):
                break
    finally:
        for task in pumps:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pumps, return_exceptions=True)
