"""The user's repository: found once, then only read — except for the few ref updates
that landing and forensics need, which go through :mod:`capataz.workspace.landing`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from capataz.errors import GitError
from capataz.workspace.git import Git, find_git

__all__ = ["Repository", "Worktree", "create_repository"]

_REF_PART = re.compile(r"^(?!\.)[A-Za-z0-9._-]+(?<!\.lock)$")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True)
class Worktree:
    path: Path
    git_dir: Path
    branch: str | None  # "refs/heads/x" or None when detached


@dataclass(frozen=True)
class Repository:
    root: Path  # top of the working tree capataz was pointed at
    git_dir: Path  # that working tree's git directory
    common_dir: Path  # objects and refs shared by every worktree

    @classmethod
    def discover(cls, start: Path) -> Repository:
        argv = [
            find_git(),
            "-c",
            "core.fsmonitor=false",
            "-c",
            "safe.directory=*",
            "rev-parse",
            "--show-toplevel",
            "--absolute-git-dir",
            "--git-common-dir",
        ]
        result = subprocess.run(
            argv,
            cwd=start,
            capture_output=True,
            check=False,
            env={
                "PATH": "/usr/bin:/bin",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "LC_ALL": "C",
            },
        )
        lines = result.stdout.decode().splitlines()
        if result.returncode != 0 or len(lines) != 3:
            raise GitError(
                f"{start} is not inside a git repository",
                fix="run capataz from your repository (or create one with `git init`)",
            )
        root, git_dir, common = (Path(line) for line in lines)
        common = common if common.is_absolute() else (start / common)
        return cls(root=root.resolve(), git_dir=git_dir.resolve(), common_dir=common.resolve())

    @property
    def git(self) -> Git:
        """Commands on shared refs and objects; never touches a working tree."""
        return Git(self.common_dir)

    def branch_tip(self, branch: str) -> str:
        tip = self.loose_ref(f"refs/heads/{branch}") or self.git.rev(f"refs/heads/{branch}")
        if tip is None:
            raise GitError(
                f"branch {branch!r} does not exist in {self.root}",
                fix="set [project] target_branch in capataz.toml to an existing branch",
            )
        return tip

    def current_branch(self) -> str | None:
        result = Git(self.git_dir).run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.decode().strip() or None

    def worktrees(self) -> list[Worktree]:
        out = self.git.out("worktree", "list", "--porcelain")
        found: list[Worktree] = []
        for block in out.split("\n\n"):
            fields = dict([*line.split(" ", 1), ""][:2] for line in block.splitlines() if line)
            if "worktree" not in fields or "bare" in fields:
                continue
            path = Path(fields["worktree"])
            git_dir = self._worktree_git_dir(path)
            found.append(Worktree(path=path, git_dir=git_dir, branch=fields.get("branch")))
        return found

    def _worktree_git_dir(self, path: Path) -> Path:
        dot_git = path / ".git"
        if dot_git.is_file():
            pointer = dot_git.read_text().strip().removeprefix("gitdir:").strip()
            return (path / pointer).resolve()
        return dot_git

    def worktree_on(self, branch: str) -> Worktree | None:
        ref = f"refs/heads/{branch}"
        if not (self.common_dir / "worktrees").exists() and self.common_dir.name == ".git":
            # One working tree (the common case): its HEAD file answers without a process.
            head = (self.common_dir / "HEAD").read_text().strip()
            main = Worktree(self.common_dir.parent, self.common_dir, head.removeprefix("ref: "))
            return main if main.branch == ref else None
        return next((wt for wt in self.worktrees() if wt.branch == ref), None)

    def loose_ref(self, ref: str) -> str | None:
        """The object id a loose ref file holds, read without a git process (every run
        reads its target branch twice: once to start, once to land); None whenever git
        must answer instead: a packed or symbolic ref, another ref backend, a name that
        is not plainly a path under ``refs/``, anything but one object id in the file.
        A loose ref outranks packed-refs in git too, so the file is the answer."""
        parts = ref.split("/")
        if parts[0] != "refs" or not all(_REF_PART.match(part) for part in parts[1:]):
            return None
        try:
            text = (self.common_dir / ref).read_bytes()
        except OSError:
            return None
        tip = text.decode("ascii", errors="replace").strip()
        return tip if _OBJECT_ID.fullmatch(tip) and text == f"{tip}\n".encode() else None

    def has_ref(self, ref: str) -> bool:
        """Whether ``ref`` exists, read from the ref files (no git process)."""
        if (self.common_dir / ref).is_file():
            return True
        packed = self.common_dir / "packed-refs"
        return packed.exists() and f" {ref}\n" in packed.read_text()


def create_repository(path: Path, files: Mapping[str, str], author: str = "capataz") -> Repository:
    """A new repository at ``path`` whose one commit holds ``files`` (scratch repositories
    for `capataz demo` and `doctor --probe`); no user or system git config is read."""
    path.mkdir(parents=True, exist_ok=True)
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", author), ("EMAIL", f"{author}@localhost"))
    }
    env = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for argv in (
        ["init", "-q", "--initial-branch=main"],
        ["add", "-A"],
        ["commit", "-qm", "initial commit"],
    ):
        subprocess.run(
            [find_git(), *argv], cwd=path, env={**env, **identity}, check=True, capture_output=True
        )
    return Repository.discover(path)
