"""Every git command capataz runs goes through :class:`Git`.

Agents write the trees capataz later commits and lands, so capataz's own git calls must
never execute anything an agent could have planted: hooks, fsmonitor daemons, filter or
diff drivers, an ssh command, a pager. System and global config are ignored, risky keys
are forced off on the command line, and git itself is found once by absolute path so a
PATH entry inside a workspace can never stand in for it."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from capataz.errors import GitError

__all__ = ["NEUTRAL_ATTRIBUTES", "Git", "find_git"]

# For a private git dir's info/attributes, which outranks every .gitattributes: no
# attribute (from an agent's tree or anywhere) selects a filter, driver or conversion.
NEUTRAL_ATTRIBUTES = "* !filter !diff !merge !ident !working-tree-encoding !text !eol\n"

_SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.pager=cat",
    "core.sshCommand=false",
    "safe.directory=*",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "protocol.ext.allow=never",
    "protocol.file.allow=always",
    "submodule.recurse=false",
    "diff.external=",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
)

GIT_TIMEOUT = 300.0  # no git call on a workspace may wait forever

_IDENTITY = {
    "GIT_AUTHOR_NAME": "capataz",
    "GIT_AUTHOR_EMAIL": "capataz@localhost",
    "GIT_COMMITTER_NAME": "capataz",
    "GIT_COMMITTER_EMAIL": "capataz@localhost",
}


@functools.cache
def find_git() -> str:
    """Absolute path of git from fixed system locations, then PATH as a last resort."""
    for candidate in ("/usr/bin/git", "/usr/local/bin/git", "/bin/git"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("git")
    if not found:
        raise GitError("git is not installed", fix="install git (apt-get install git)")
    return str(Path(found).resolve())


class Git:
    """A repository handle: ``git_dir`` and ``work_tree`` are always passed explicitly,
    so a ``.git`` file or directory an agent creates in a tree is never consulted."""

    def __init__(
        self,
        git_dir: Path,
        work_tree: Path | None = None,
        *,
        isolated: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self.isolated = isolated  # ignore system/global config (agent-touched repositories)
        self.extra_env = dict(env or {})

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/nonexistent"),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_ASKPASS": "/bin/false",
            **_IDENTITY,
        }
        if self.isolated:
            env["GIT_CONFIG_NOSYSTEM"] = "1"
            env["GIT_CONFIG_GLOBAL"] = "/dev/null"
            env["GIT_ATTR_NOSYSTEM"] = "1"
        env.update(self.extra_env)
        if extra:
            env.update(extra)
        return env

    def argv(self, args: Sequence[str]) -> list[str]:
        base = [find_git()]
        for item in _SAFE_CONFIG:
            base += ["-c", item]
        base.append(f"--git-dir={self.git_dir}")
        if self.work_tree is not None:
            base.append(f"--work-tree={self.work_tree}")
        return base + list(args)

    def run(
        self,
        *args: str,
        check: bool = True,
        input_bytes: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            result = subprocess.run(
                self.argv(args),
                input=input_bytes,
                capture_output=True,
                env=self._env(env),
                cwd=self.work_tree or "/",
                check=False,
                start_new_session=True,
                timeout=GIT_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitError(
                f"git {' '.join(args[:2])} did not finish in {GIT_TIMEOUT:.0f} s; it was killed",
                fix="look for special files (FIFOs, huge files) in the workspace",
            ) from exc
        if check and result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip().splitlines()
            last = stderr[-1] if stderr else f"exit code {result.returncode}"
            raise GitError(f"git {' '.join(args[:2])} failed: {last}")
        return result

    def stream(self, *args: str) -> subprocess.Popen[bytes]:
        """A git process to talk to through pipes (``cat-file --batch``), so a large
        answer is read piece by piece; the caller closes it and waits for it."""
        return subprocess.Popen(
            self.argv(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self._env(None),
            cwd=self.work_tree or "/",
            start_new_session=True,
        )

    def out(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, env=env).stdout.decode(errors="replace").strip()

    def ok(self, *args: str) -> bool:
        return self.run(*args, check=False).returncode == 0

    def rev(self, name: str) -> str | None:
        result = self.run("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return result.stdout.decode().strip() or None if result.returncode == 0 else None
