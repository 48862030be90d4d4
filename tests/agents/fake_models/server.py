"""A fake model API on loopback, shared by the fake Anthropic and OpenAI servers.

Why a real HTTP server: the agent CLIs under test are the real ones, with their own HTTP
clients, retries and timeouts; only a real socket on 127.0.0.1 exercises all of that.
It is a stdlib ``ThreadingHTTPServer`` on an ephemeral port in a daemon thread. A
subclass answers requests in :meth:`FakeModelServer.respond` according to
``scenario`` (``"edit"``, ``"unauthorized"``, ``"rate_limited_then_edit"``, ``"hang"``;
a subclass may add more) and every request is recorded, so a test can assert what the
agent sent (its tools, its model, its key) and wait for a request to arrive.

Use::

    with FakeAnthropic("edit", edits=[Edit("hello.txt", "hi\\n")]) as base_url:
        ...  # point the agent at base_url
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Counter", "Edit", "FakeModelServer", "Recorded", "Reply"]


@dataclass(frozen=True)
class Edit:
    """The change the fake model asks the agent to make: write ``content`` to ``path``
    (relative to the agent's working directory)."""

    path: str
    content: str


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the JSON body, or the raw text when it was not JSON, or None

    def json_body(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


class Reply:
    """How :meth:`FakeModelServer.respond` answers: JSON, a server-sent event stream,
    or never (``hang``)."""

    def __init__(self, handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        self._handler = handler
        self._stop = stop

    def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        handler = self._handler
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def sse(self, events: Iterable[tuple[str | None, Any]]) -> None:
        """``text/event-stream``: each (event name or None, data) as one frame."""
        handler = self._handler
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("connection", "close")
        handler.end_headers()
        for name, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            handler.wfile.write(frame.encode())
            handler.wfile.flush()
        handler.close_connection = True

    def hang(self) -> None:
        """Accept the request and never answer (until the server stops)."""
        self._stop.wait()
        self._handler.close_connection = True


class FakeModelServer:
    """Base of the fake model APIs: recording, threading, lifecycle."""

    def __init__(self, scenario: str = "edit", *, edits: Sequence[Edit] = ()) -> None:
        self.scenario = scenario
        # the files the model asks for, all in one turn (one tool call each)
        self.edits = list(edits) or [Edit("hello.txt", "hello from the fake model\n")]
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- for subclasses ---------------------------------------------------------------

    def respond(self, request: Recorded, reply: Reply) -> None:
        """Answer one request (called on the request's own thread)."""
        raise NotImplementedError

    def count(self, predicate: Any = None) -> int:
        """How many recorded requests satisfy ``predicate`` (all when None)."""
        with self._lock:
            return sum(1 for r in self.requests if predicate is None or predicate(r))

    # -- lifecycle --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                request = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with owner._lock:
                    owner.requests.append(request)
                owner.respond(request, Reply(self, owner._stop))

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the recorded requests are the log

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self.base_url

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()  # releases hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Counter:
    """A thread-safe count of what a scenario has already played (429s sent, …):
    ``take()`` returns how many times it was taken before."""

    value: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int:
        with self.lock:
            self.value += 1
            return self.value - 1
