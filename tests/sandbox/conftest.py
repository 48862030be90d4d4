"""Fixtures for the sandbox tests: real bubblewrap, real processes, small limits.

Helpers are handed out as fixtures (``run``, ``host_pids``) because the suite imports
test modules with ``--import-mode=importlib``, where conftest is not importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests import helpers

from capataz.config import Limits, SandboxOptions
from capataz.sandbox import BwrapSandbox, UnsandboxedSandbox
from capataz.sandbox.base import ExecResult, OutputLine, Sandbox, SandboxSpec
from capataz.sandbox.network import NetworkPolicy

# Small enough to keep the suite quick, large enough for sh, git and python3 to start.
SMALL_LIMITS: dict[str, Any] = {
    "timeout": 20,
    "idle_timeout": None,
    "memory": 1024**3,
    "processes": 64,
    "file_size": 64 * 1024**2,
    "open_files": 256,
    "max_output": 4 * 1024**2,
}


@dataclass
class Ran:
    """A finished run and every line it delivered."""

    result: ExecResult
    lines: list[OutputLine] = field(default_factory=list)

    @property
    def out(self) -> list[str]:
        return [line.text for line in self.lines if line.stream == "out"]

    @property
    def err(self) -> list[str]:
        return [line.text for line in self.lines if line.stream == "err"]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def run(workspace: Path) -> Callable[..., Ran]:
    """Run a shell snippet (or an argv) the way capataz would, collecting its output."""

    def run_in(
        sandbox: Sandbox,
        command: str | list[str],
        *,
        workspace: Path = workspace,
        should_stop: Callable[[], bool] | None = None,
        network: bool | NetworkPolicy = False,
        git_dir: Path | None = None,
        env: dict[str, str] | None = None,
        judge: Callable[[OutputLine], bool | None] | None = None,
        **limits: Any,
    ) -> Ran:
        """``judge``, when given, is what the sink answers per line (False: chatter)."""
        argv = ["sh", "-c", command] if isinstance(command, str) else command
        spec = SandboxSpec(
            argv=argv,
            workspace=workspace,
            limits=Limits(**{**SMALL_LIMITS, **limits}),
            git_dir=git_dir,
            env=env or {},
            network=network,
        )
        lines: list[OutputLine] = []

        def sink(line: OutputLine) -> bool | None:
            lines.append(line)
            return judge(line) if judge is not None else None

        result = sandbox.run(spec, sink, should_stop)
        return Ran(result, lines)

    return run_in


@pytest.fixture
def host_pids() -> Callable[[str], list[int]]:
    """Pids on the host whose command line contains a marker (zombies have none)."""
    return helpers.host_pids


@pytest.fixture(scope="session")
def bwrap() -> BwrapSandbox:
    return BwrapSandbox(SandboxOptions())


@pytest.fixture(scope="session")
def unsandboxed() -> UnsandboxedSandbox:
    return UnsandboxedSandbox(SandboxOptions())


@pytest.fixture(params=["bwrap", "none"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each behaviour both backends promise is checked on both."""
    name = "bwrap" if request.param == "bwrap" else "unsandboxed"
    backend: Sandbox = request.getfixturevalue(name)
    return backend


@pytest.fixture(scope="session")
def python3() -> str:
    """A python3 the sandbox can see (the test's own interpreter may live under /root)."""
    found = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        pytest.skip("no python3 in /usr/local/bin, /usr/bin or /bin")
    return found


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit."""
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "README").write_text("hello\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit"], check=True)
    return path


@pytest.fixture
def planted_secret() -> Iterator[Path]:
    """A file in the real home directory (``/root`` when root) that no sandbox may read."""
    path = Path.home() / f"capataz-test-{os.urandom(6).hex()}"
    path.write_text("the-planted-secret\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
