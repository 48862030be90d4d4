"""A throwaway PostgreSQL cluster for the benchmarks (the approach of tests/postgres.py,
without pytest).

initdb/pg_ctl refuse to run as root, so as root they run as the ``postgres`` user. The
server listens on a unix socket in its own temporary directory and on 127.0.0.1 at a
free port, with fsync off: the benchmarks measure the queue, not the disk.

    with postgres_admin_url() as admin:      # $CAPATAZ_BENCH_PG_URL, or a new cluster
        url = create_database(admin, "bench")
        ...
        drop_database(admin, url)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["ENV_VAR", "Cluster", "create_database", "drop_database", "postgres_admin_url"]

ENV_VAR = "CAPATAZ_BENCH_PG_URL"
PG_PATHS = ":".join(
    [
        os.environ.get("PATH", ""),
        "/usr/local/bin",
        *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
    ]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One initdb'd data directory and its server, removed by :meth:`destroy`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="capataz-bench-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    @property
    def data(self) -> str:
        return str(self.dir / "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        binary = shutil.which(tool, path=PG_PATHS)
        if binary is None:
            raise FileNotFoundError(f"{tool} not found on PATH, /usr/local/bin or {PG_PATHS}")
        subprocess.run(
            [*self.prefix, binary, *args], check=True, capture_output=True, text=True, timeout=60
        )

    def start(self) -> str:
        """initdb and start the server; returns the URL of its ``postgres`` database."""
        self._run(
            "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
        )
        options = (
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-l", str(self.dir / "log"), "-w", "-o", options, "start"
        )
        return self.url

    def destroy(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_admin_url() -> Iterator[str]:
    """$CAPATAZ_BENCH_PG_URL (a role that may CREATE DATABASE), else a throwaway cluster
    for the duration of the block."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        yield configured
        return
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


def create_database(admin_url: str, prefix: str) -> str:
    """A new empty database next to ``admin_url``'s; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = admin_url.partition("?")[0].rpartition("/")
    query = admin_url.partition("?")[2]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def drop_database(admin_url: str, url: str) -> None:
    name = url.partition("?")[0].rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
