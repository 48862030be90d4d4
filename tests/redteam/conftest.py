"""The red-team tier: attacks an agent in control of its sandbox would try.

Every attack runs through the real ``capataz`` command (real git, real bubblewrap) twice:
as root, where the sandbox drops to a leased unprivileged uid, and as an unprivileged
user, where bubblewrap relies on user namespaces. ``attacker`` hands a test a repository
owned by the user in question and a ``capataz`` function that runs as that user.
Helpers are fixtures because the suite imports test modules with importlib."""

from __future__ import annotations

import atexit
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

UNPRIVILEGED = 65534  # nobody: owns nothing, belongs to nothing
CAPATAZ = Path(sys.executable).with_name("capataz")
BASE_CONFIG = """\
[project]
target_branch = "main"

[agents.shell]
command = ["sh", "-c", "{instruction}"]
timeout = "60s"
idle_timeout = "30s"
"""


@dataclass
class Attacker:
    """A repository and the identity capataz runs as while an agent attacks it."""

    user: str  # "root" or "unprivileged"
    repo: Path
    home: Path

    @property
    def uid(self) -> int:
        return 0 if self.user == "root" else UNPRIVILEGED

    def git(self, *args: str) -> str:
        return self.run([shutil.which("git") or "/usr/bin/git", *args]).stdout.strip()

    def capataz(
        self,
        *args: str,
        check: bool = False,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.command), *args], check=check, env=env, stdin=stdin)

    @property
    def command(self) -> Path:
        """The ``capataz`` console script this user can start."""
        return CAPATAZ if self.user == "root" else unprivileged_capataz()

    def exec(self, instruction: str, task_id: str = "t1", *extra: str) -> dict[str, object]:
        """``capataz exec --json``: the report a script would read."""
        import json

        done = self.capataz("exec", instruction, "--id", task_id, "--json", *extra)
        assert done.stdout.strip(), done.stderr
        report: dict[str, object] = json.loads(done.stdout)
        return report

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LC_ALL": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "user",
            "GIT_AUTHOR_EMAIL": "user@example.invalid",
            "GIT_COMMITTER_NAME": "user",
            "GIT_COMMITTER_EMAIL": "user@example.invalid",
            **(env or {}),
        }
        if self.user != "root":
            argv = [
                "setpriv",
                f"--reuid={UNPRIVILEGED}",
                f"--regid={UNPRIVILEGED}",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
                *argv,
            ]
        done = subprocess.run(
            argv,
            cwd=self.repo,
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
            input=stdin if stdin is not None else "",
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr}")
        return done


def _world_executable(path: Path) -> bool:
    """Whether every directory up to ``path`` lets others through, and it runs for them."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in [real, *real.parents])


def unprivileged_capataz() -> Path:
    """A ``capataz`` command the unprivileged user can start.

    The test environment's Python often lives in root's home (pyenv), which others may not
    enter. Then a venv of the system's Python of the same version stands in, seeing the
    very same site-packages (an import hook, not a copy): the same capataz under test."""
    if _world_executable(Path(sys.executable)):
        return CAPATAZ
    shim = Path(tempfile.gettempdir(), f"capataz-redteam-python-{os.getpid()}")
    command = shim / "bin" / "capataz"
    if command.exists():
        return command
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path("/usr/bin", version)
    if not _world_executable(base):
        pytest.fail(f"no {version} the unprivileged user may run (install {version})")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(shim)], check=True)
    atexit.register(shutil.rmtree, shim, True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(shim)})["purelib"])
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in ours]
    (purelib / "capataz-under-test.pth").write_text("\n".join(lines) + "\n")
    command.write_text(f"#!{shim}/bin/python\nfrom capataz.cli import main\nmain()\n")
    command.chmod(0o755)
    for path in [shim, *shim.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o005 | (0o050 if path.is_dir() else 0))
    return command


@pytest.fixture(params=["root", "unprivileged"])
def attacker(request: pytest.FixtureRequest) -> Iterator[Attacker]:
    """A fresh repository with one commit and a capataz.toml, owned by the user the
    test runs capataz as. It lives in a 0755 directory of its own so that the
    unprivileged user can reach it (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("the red-team tier switches users: run the suite as root")
    top = Path(tempfile.mkdtemp(prefix="capataz-redteam-"))
    top.chmod(0o755)
    attacker = Attacker(user=request.param, repo=top / "repo", home=top / "home")
    try:
        for path in (attacker.repo, attacker.home):
            path.mkdir()
            os.chown(path, attacker.uid, attacker.uid)
        attacker.git("init", "--quiet", "--initial-branch=main")
        (attacker.repo / "README.md").write_text("# project\n")
        (attacker.repo / ".gitignore").write_text(".capataz/\n")
        (attacker.repo / "capataz.toml").write_text(BASE_CONFIG)
        for name in ("README.md", ".gitignore", "capataz.toml"):
            os.chown(attacker.repo / name, attacker.uid, attacker.uid)
        attacker.git("add", "-A")
        attacker.git("commit", "--quiet", "-m", "initial")
        yield attacker
    finally:
        shutil.rmtree(top, ignore_errors=True)
