"""A real ``capataz serve`` process on loopback per test, over the test's queue
database (SQLite and PostgreSQL, from ``queue_url``), with a token for every role."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.serving import start_serve, stop_serve

from capataz.store import Store

ROLES = ("admin", "operator", "runner", "viewer")


@dataclass
class Server:
    base: str
    repo: Path
    env: dict[str, str]
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None, token: str | None = None) -> httpx.Client:
        chosen = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "capataz", *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def store(self) -> Store:
        return Store.open(self.url)


@pytest.fixture
def start_server(make_repo: Callable[..., Path], queue_url: str) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen[str]] = []
    made = 0

    def start(config: str = "[server]\nrate_burst = 10000\nrate_limit = 10000\n") -> Server:
        nonlocal made
        made += 1
        repo = make_repo(f"repo{made}", config=config)
        env = {**os.environ, "CAPATAZ_DATABASE_URL": queue_url}
        store = Store.open(queue_url)
        try:
            tokens = {role: store.tokens.create(role, f"test-{role}") for role in ROLES}
        finally:
            store.close()
        proc, base = start_serve(repo, env)
        procs.append(proc)
        return Server(base=base, repo=repo, env=env, url=queue_url, tokens=tokens)

    yield start
    for proc in procs:
        stop_serve(proc)


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()
