"""Waking idle runners when a task becomes ready.

On PostgreSQL every transaction that makes a task ready also runs
``pg_notify('capataz_ready', '')`` (see ``_base.StoreBase._notify_ready``), and a runner with
nothing to do blocks in :meth:`ReadyListener.wait` on a dedicated LISTEN connection
until a notification arrives or its timeout passes. Notifications are hints, never the
source of truth: one sent before the listener connected is simply missed, so runners
always claim after a timeout too.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

__all__ = ["EVENTS_CHANNEL", "READY_CHANNEL", "ReadyListener", "conninfo"]

# PostgreSQL channel that carries "a task became ready" to idle runners.
READY_CHANNEL = "capataz_ready"
# ... and "events were committed" to the server's event hub (``capataz.api.event_hub``).
EVENTS_CHANNEL = "capataz_events"

# While the database is unreachable, a failed wait still takes this long (or the
# timeout, if shorter), so a runner's poll loop cannot spin on connection errors.
_ERROR_PAUSE_SECONDS = 0.5


def conninfo(url: URL) -> str:
    """libpq's connection string for ``url``, built from its parts. Rendering the URL
    instead would encode a space in its query as ``+`` (``?options=-c+lock_timeout…``),
    which libpq does not decode, so a URL carrying ``options`` could never listen."""
    params: dict[str, str | int | None] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    for key, value in url.query.items():  # host=/run/postgresql, sslmode, options, ...
        params[key] = value if isinstance(value, str) else value[-1]
    return make_conninfo("", **{key: value for key, value in params.items() if value is not None})


class ReadyListener:
    """A lazily opened ``LISTEN capataz_ready`` (or ``channel``) connection that
    reconnects after errors. Thread-safe: concurrent waiters take turns."""

    def __init__(self, url: URL, channel: str = READY_CHANNEL) -> None:
        self._conninfo = conninfo(url)
        self._channel = channel
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()

    def wait(self, timeout: float) -> bool:
        """True when a notification arrived within ``timeout`` seconds, else False
        (also after a connection error, which drops the connection for the next call
        to reopen)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            try:
                conn = self._connect()
                woken = False
                remaining = max(deadline - time.monotonic(), 0.0)
                for _ in conn.notifies(timeout=remaining, stop_after=1):
                    woken = True
                if woken:  # one wake-up for what arrived together, not one each
                    for _ in conn.notifies(timeout=0.0):
                        pass
            except psycopg.Error:
                self._drop()
                time.sleep(min(max(deadline - time.monotonic(), 0.0), _ERROR_PAUSE_SECONDS))
                return False
            return woken

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            try:
                conn.execute(f"LISTEN {self._channel}")
            except psycopg.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
