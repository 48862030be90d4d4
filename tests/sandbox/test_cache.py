"""The agent's persistent cache (capataz.sandbox.cache): $HOME/.cache kept between runs,
never the user's, bounded by ``disk``, one run at a time, and never a way to make
capataz (root) chown a file that is not the agent's."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from capataz.config import Limits
from capataz.errors import ConfigError
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, Sandbox, SandboxSpec
from capataz.sandbox.cache import agent_cache_dir, held_cache

LIMITS: dict[str, Any] = {
    "timeout": 20,
    "idle_timeout": None,
    "memory": 1024**3,
    "processes": 64,
    "file_size": 64 * 1024**2,
    "open_files": 256,
    "disk": 64 * 1024**2,
}


def run_with_cache(
    sandbox: Sandbox, workspace: Path, script: str, cache: Path | None, **limits: Any
) -> tuple[ExecResult, list[str]]:
    spec = SandboxSpec(
        argv=["sh", "-c", script],
        workspace=workspace,
        limits=Limits(**{**LIMITS, **limits}),
        cache=cache,
    )
    lines: list[OutputLine] = []
    result = sandbox.run(spec, lines.append)
    return result, [line.text for line in lines]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return agent_cache_dir(tmp_path / "repo", "coder")


WRITE = 'mkdir -p "$HOME/.cache/tool" && echo kept > "$HOME/.cache/tool/x" && echo wrote'
READ = 'cat "$HOME/.cache/tool/x" 2>/dev/null || echo missing'


def test_cache_is_kept_between_runs_and_only_with_cache(
    sandbox: Sandbox, workspace: Path, cache: Path
) -> None:
    first, out = run_with_cache(sandbox, workspace, WRITE, cache)
    assert first.ok and out == ["wrote"], out
    second, out = run_with_cache(sandbox, workspace, READ, cache)
    assert second.ok and out == ["kept"]
    without, out = run_with_cache(sandbox, workspace, READ, None)
    assert without.ok and out == ["missing"]  # without `cache`, HOME starts empty


def test_cache_dir_is_private_and_inside_capataz_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    path = agent_cache_dir(repo, "coder")
    assert path == repo / ".capataz" / "cache" / "coder"
    for directory in (path, path.parent, path.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    path.chmod(0o755)  # widened by hand: narrowed again on the next run
    assert agent_cache_dir(repo, "coder").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_an_agent_name_that_is_no_safe_directory_name_has_no_cache(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match="safe directory name"):
        agent_cache_dir(tmp_path / "repo", name)
    assert not (tmp_path / "escape").exists()


def test_a_concurrent_run_goes_without_the_cache(
    bwrap: Sandbox, workspace: Path, cache: Path
) -> None:
    run_with_cache(bwrap, workspace, WRITE, cache)
    lock = os.open(cache.with_name("coder.lock"), os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another run of the agent would hold it
        result, out = run_with_cache(bwrap, workspace, READ + "; " + WRITE, cache)
    finally:
        os.close(lock)
    assert result.ok and out == ["missing", "wrote"]  # a private, empty $HOME/.cache
    assert (cache / "tool" / "x").read_text() == "kept\n"  # the held cache untouched


def test_a_cache_grown_beyond_disk_is_emptied_before_the_run(
    bwrap: Sandbox, workspace: Path, cache: Path
) -> None:
    (cache / "big").write_bytes(os.urandom(2 * 1024 * 1024))
    result, out = run_with_cache(
        bwrap, workspace, 'ls -A "$HOME/.cache"; echo end', cache, disk=1024**2
    )
    assert result.ok and out == ["end"]
    assert not (cache / "big").exists()


def test_what_a_run_writes_into_the_cache_counts_against_disk(
    bwrap: Sandbox, workspace: Path, cache: Path
) -> None:
    script = 'head -c 3000000 /dev/zero > "$HOME/.cache/fill"; sleep 5'
    result, _ = run_with_cache(bwrap, workspace, script, cache, disk=1024**2)
    assert result.outcome is ExecOutcome.DISK_LIMIT


def test_files_the_run_left_are_owned_by_its_uid_not_capataz(
    bwrap: Sandbox, workspace: Path, cache: Path
) -> None:
    run_with_cache(bwrap, workspace, WRITE, cache)
    written = cache / "tool" / "x"
    if os.geteuid() == 0:  # the run's unprivileged uid, never root
        assert written.stat().st_uid >= 200_000
    else:
        assert written.stat().st_uid == os.getuid()


def test_handing_the_cache_over_never_chowns_a_link_target_or_a_foreign_file(
    tmp_path: Path, cache: Path
) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("not the agent's\n")
    before = outside.stat()
    (cache / "hard").hardlink_to(outside)  # a file from elsewhere, hard-linked in
    (cache / "soft").symlink_to(outside)
    (cache / "mine").write_text("the agent's\n")
    uid = 200_123
    with held_cache(cache, uid=uid, limit=None) as held:
        assert held == cache
    after = outside.stat()
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    if os.geteuid() == 0:
        assert (cache / "soft").lstat().st_uid == os.geteuid()  # capataz's own: kept
        assert cache.stat().st_uid == uid


def test_no_cache_no_lock(tmp_path: Path) -> None:
    with held_cache(None, uid=None, limit=None) as held:
        assert held is None
    assert list(tmp_path.iterdir()) == []
