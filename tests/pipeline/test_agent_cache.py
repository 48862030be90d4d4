"""``[agents.X] cache = true`` through the whole pipeline: a scripted agent finds in its
second run what its first run left in $HOME/.cache, and nothing without ``cache``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import git

from capataz.config import parse_config
from capataz.models import Outcome
from capataz.pipeline.supervisor import RunReport, RunSpec, Supervisor
from capataz.workspace.repo import Repository

CONFIG = """
[agents.cached]
command = ["bash", "-c", "{instruction}"]
cache = true
timeout = "30s"
idle_timeout = "20s"
memory = "1GiB"

[agents.plain]
command = ["bash", "-c", "{instruction}"]
timeout = "30s"
idle_timeout = "20s"
memory = "1GiB"
"""

WRITE = 'mkdir -p "$HOME/.cache/tool" && echo "from run 1" > "$HOME/.cache/tool/x"'
READ = 'cat "$HOME/.cache/tool/x" > seen.txt 2>/dev/null || echo missing > seen.txt'


def run(repo_path: Path, agent: str, instruction: str, task_id: str) -> RunReport:
    repo = Repository.discover(repo_path)
    spec = RunSpec(task_id=task_id, instruction=instruction, agent=agent)
    return Supervisor(repo, parse_config(CONFIG)).execute(spec)


def test_a_cached_agent_finds_what_its_last_run_cached(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    first = run(repo, "cached", WRITE, "c1")
    assert first.outcome is Outcome.NO_CHANGES  # the cache is not the workspace
    second = run(repo, "cached", READ, "c2")
    assert second.outcome is Outcome.LANDED
    assert git(repo, "show", "main:seen.txt") == "from run 1"

    cache = repo / ".capataz" / "cache" / "cached"
    assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700
    assert (cache / "tool" / "x").read_text() == "from run 1\n"
    assert not (Path.home() / ".cache" / "tool" / "x").exists()  # never the user's cache


def test_without_cache_home_starts_empty_every_run(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    run(repo, "plain", WRITE, "p1")
    second = run(repo, "plain", READ, "p2")
    assert second.outcome is Outcome.LANDED
    assert git(repo, "show", "main:seen.txt") == "missing"
    assert not (repo / ".capataz" / "cache").exists()
