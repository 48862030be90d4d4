"""What only the bubblewrap backend promises: the host stays out of the command's reach."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from capataz.config import SandboxOptions
from capataz.errors import SandboxError
from capataz.sandbox import BwrapSandbox, UnsandboxedSandbox
from capataz.sandbox.base import ExecOutcome

Run = Callable[..., Any]


def unique() -> str:
    return os.urandom(6).hex()


def test_workspace_writes_land_on_the_host(run: Run, bwrap: BwrapSandbox, workspace: Path) -> None:
    (workspace / "given.txt").write_text("from the host\n")
    ran = run(bwrap, "pwd; cat given.txt; mkdir -p sub && echo hello > sub/file.txt")
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out == [str(workspace), "from the host"]
    assert (workspace / "sub" / "file.txt").read_text() == "hello\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop happens only when capataz is root")
def test_commands_never_run_as_root(run: Run, bwrap: BwrapSandbox, workspace: Path) -> None:
    ran = run(bwrap, "id -u; touch made-inside")
    assert ran.result.outcome is ExecOutcome.OK
    assert int(ran.out[0]) >= 200_000
    assert (workspace / "made-inside").stat().st_uid == int(ran.out[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop happens only when capataz is root")
def test_concurrent_runs_get_their_own_uid(run: Run, bwrap: BwrapSandbox, tmp_path: Path) -> None:
    """So that one run's processes never count against another's process limit."""
    workspaces = [tmp_path / "a", tmp_path / "b"]
    for path in workspaces:
        path.mkdir()
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda ws: run(bwrap, "sleep 0.5; id -u", workspace=ws), workspaces))
    uids = {ran.out[0] for ran in runs}
    assert len(uids) == 2, uids


@pytest.mark.parametrize("where", ["/usr", "/etc", "home", "sibling"])
def test_writes_outside_the_workspace_fail(
    run: Run, bwrap: BwrapSandbox, workspace: Path, where: str
) -> None:
    base = {
        "/usr": Path("/usr"),
        "/etc": Path("/etc"),
        "home": Path.home(),
        "sibling": workspace.parent / "sibling",
    }[where]
    base.mkdir(exist_ok=True)
    target = base / f"capataz-test-{unique()}"
    try:
        ran = run(bwrap, f"echo x > {target}")
        assert ran.result.outcome is ExecOutcome.FAILED
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_secrets_in_the_real_home_are_out_of_sight(
    run: Run, bwrap: BwrapSandbox, unsandboxed: UnsandboxedSandbox, planted_secret: Path
) -> None:
    assert "the-planted-secret" in run(unsandboxed, f"cat {planted_secret}").out  # it is there
    ran = run(bwrap, f"cat {planted_secret}; ls -A {planted_secret.parent}")
    assert ran.result.outcome is ExecOutcome.OK  # ls of the empty home succeeds
    assert "the-planted-secret" not in ran.text
    assert "No such file" in ran.text


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback; connecting completes without accept()."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_no_network_unless_asked(
    run: Run, bwrap: BwrapSandbox, python3: str, listener: int
) -> None:
    probe = [
        python3,
        "-c",
        f"import socket; socket.create_connection(('127.0.0.1', {listener}), timeout=3); "
        "print('reached')",
    ]
    blocked = run(bwrap, probe)
    assert blocked.result.outcome is ExecOutcome.FAILED
    assert "reached" not in blocked.out
    allowed = run(bwrap, probe, network=True)
    assert allowed.result.outcome is ExecOutcome.OK, allowed.text
    assert allowed.out == ["reached"]


def test_background_processes_are_reported_and_gone(
    run: Run, bwrap: BwrapSandbox, host_pids: Callable[[str], list[int]]
) -> None:
    digits = random.randrange(10**8)
    plain, detached = f"3001.{digits}", f"3002.{digits}"
    ran = run(
        bwrap,
        f"sleep {plain} & setsid nohup sleep {detached} >/dev/null 2>&1 & sleep 0.3; echo done",
    )
    assert ran.result.outcome is ExecOutcome.OK
    assert ran.out == ["done"]
    sleeps = [p for p in ran.result.leftover_processes if p.startswith("sleep (pid ")]
    assert len(sleeps) == 2, ran.result.leftover_processes
    assert "left behind" in ran.result.detail
    assert host_pids(plain) == []
    assert host_pids(detached) == []


def test_fork_bomb_is_contained(
    run: Run, bwrap: BwrapSandbox, python3: str, host_pids: Callable[[str], list[int]]
) -> None:
    marker = f"capataz-bomb-{unique()}"
    bomb = f"import os  # {marker}\nwhile True:\n    os.fork()"
    ran = run(bwrap, [python3, "-c", bomb], processes=32, memory=256 * 1024**2)
    assert ran.result.outcome is ExecOutcome.FAILED  # ended by itself, not by the timeout
    assert "Resource temporarily unavailable" in ran.text  # fork hit the process limit
    assert host_pids(marker) == []


def test_git_history_is_readable_but_not_writable(
    run: Run, bwrap: BwrapSandbox, repo: Path
) -> None:
    git_dir = repo / ".git"
    config = (git_dir / "config").read_text()
    log = run(bwrap, "git log --format=%s", git_dir=git_dir)
    assert log.result.outcome is ExecOutcome.OK, log.text
    assert log.out == ["first commit"]
    hook = run(bwrap, "echo 'echo pwned' > .git/hooks/pre-commit", git_dir=git_dir)
    assert hook.result.outcome is ExecOutcome.FAILED
    assert not (git_dir / "hooks" / "pre-commit").exists()
    configured = run(bwrap, "git config core.hooksPath /tmp", git_dir=git_dir)
    assert configured.result.outcome is ExecOutcome.FAILED
    assert (git_dir / "config").read_text() == config


def test_agent_git_config_is_added_after_capatazs_own(
    run: Run, bwrap: BwrapSandbox, repo: Path
) -> None:
    """An agent env with its own GIT_CONFIG_COUNT keeps capataz's safe.directory entry
    (renumbered after it) and gets a git identity from $HOME/.gitconfig."""
    agent_env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.editor",
        "GIT_CONFIG_VALUE_0": "true",
    }
    ran = run(
        bwrap,
        "git config --get-all safe.directory; git config core.editor; "
        "git config user.name; git config --global user.email; git status --short",
        git_dir=repo / ".git",
        env=agent_env,
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out[:4] == ["*", "true", "capataz agent", "agent@capataz.invalid"]


def test_exposed_paths_are_readable_not_writable(run: Run, workspace: Path) -> None:
    toolchain = Path.home() / f"capataz-test-tool-{unique()}"
    toolchain.mkdir()
    try:
        (toolchain / "tool").write_text("a tool\n")
        sandbox = BwrapSandbox(SandboxOptions(expose=[f"~/{toolchain.name}"]))
        ran = run(sandbox, f"cat {toolchain}/tool; echo x > {toolchain}/tool")
        assert ran.out == ["a tool"]
        assert ran.result.outcome is ExecOutcome.FAILED
        assert (toolchain / "tool").read_text() == "a tool\n"
    finally:
        for child in toolchain.iterdir():
            child.unlink()
        toolchain.rmdir()


def test_bubblewrap_that_cannot_start_raises(
    run: Run, bwrap: BwrapSandbox, workspace: Path, repo: Path
) -> None:
    (workspace / ".git").write_text("gitdir: /elsewhere\n")  # a file: no mount point
    with pytest.raises(SandboxError) as caught:
        run(bwrap, "true", git_dir=repo / ".git")
    assert "could not set up the sandbox" in caught.value.message
    assert "bwrap:" in caught.value.message
    assert caught.value.fix


def test_a_configured_bwrap_must_exist(run: Run) -> None:
    sandbox = BwrapSandbox(SandboxOptions(bwrap="/nonexistent/bwrap"))
    with pytest.raises(SandboxError, match="not an executable file"):
        run(sandbox, "true")
    assert any("not an executable file" in problem for problem in sandbox.check())
