"""Shared fixtures: real git repositories in temporary directories."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "user",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "user",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
    "PATH": "/usr/bin:/bin",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def snapshot(repo: Path) -> dict[str, str]:
    """Every file of the working tree and .git (except capataz's own .capataz/) by hash,
    plus refs, index and stash: equal snapshots mean the user's tree was not touched."""
    found: dict[str, str] = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.startswith(".capataz") or not path.is_file() or path.is_symlink():
            continue
        if rel.startswith(".git/") and not (
            rel in (".git/index", ".git/HEAD", ".git/config") or rel.startswith(".git/hooks/")
        ):
            continue
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    found["<refs>"] = git(
        repo,
        "for-each-ref",
        "--format=%(refname) %(objectname)",
        "refs/heads",
        "refs/stash",
        "refs/tags",
    )
    found["<status>"] = git(repo, "status", "--porcelain", "--untracked-files=all")
    return found


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    def make(
        name: str = "repo", files: dict[str, str] | None = None, config: str | None = None
    ) -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "--quiet", "--initial-branch=main")
        content = {"README.md": "# project\n", ".gitignore": ".capataz/\n", **(files or {})}
        if config is not None:
            content["capataz.toml"] = config
        for rel, text in content.items():
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", "initial")
        return repo

    return make


@pytest.fixture(autouse=True)
def _no_user_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in GIT_ENV.items():
        if key != "PATH":
            monkeypatch.setenv(key, value)
    os.environ.pop("CAPATAZ_DATABASE_URL", None)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of a PostgreSQL for this test session (CAPATAZ_TEST_PG_URL or our own)."""
    from tests.postgres import Cluster, no_postgres

    configured = os.environ.get("CAPATAZ_TEST_PG_URL")
    if configured:
        yield configured
        return
    cluster = Cluster()
    try:
        url = cluster.init()
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        cluster.destroy()
        no_postgres(f"could not start a throwaway cluster: {getattr(exc, 'stderr', '') or exc}")
        return
    try:
        yield url
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The queue's database URL: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    from tests.postgres import create_database

    return create_database(str(request.getfixturevalue("pg_server")))
