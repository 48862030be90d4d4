"""Throwaway PostgreSQL clusters for the test suite (initdb/pg_ctl on this machine).

The server refuses to run as root, so as root it runs as the ``postgres`` user, on a unix
socket in its own directory and 127.0.0.1 on a free port, with fsync off."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

PG_PATHS = ":".join(
    [
        os.environ.get("PATH", ""),
        "/usr/local/bin",
        *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
    ]
)


def no_postgres(why: str) -> None:
    """Skip, except in CI: a suite that silently tested only SQLite would hide the bugs
    it exists to catch."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}")
    pytest.skip(f"no PostgreSQL: {why}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="capataz-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    @property
    def data(self) -> str:
        return str(self.dir / "data")

    def _run(self, tool: str, *args: str) -> None:
        binary = shutil.which(tool, path=PG_PATHS)
        if binary is None:
            raise FileNotFoundError(f"{tool} not found")
        subprocess.run(
            [*self.prefix, binary, *args], check=True, capture_output=True, text=True, timeout=60
        )

    def init(self) -> str:
        self._run(
            "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
        )
        self.start()
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-l", str(self.dir / "log"), "-w", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(admin_url: str) -> str:
    name = f"capataz_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"
