"""What an agent changed, in the shape gates need: per-file kind and line counts, the
added lines with their new line numbers, and the result's bytes to read on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from capataz.models import ChangeKind, FileChange

__all__ = ["ChangeSet", "FileDiff"]


@dataclass(frozen=True)
class FileDiff:
    change: FileChange
    added: tuple[tuple[int, str], ...] = ()  # (line number in the new file, text)

    @property
    def path(self) -> str:
        return self.change.path


@dataclass(frozen=True)
class ChangeSet:
    """The diff between the base commit and the agent's result commit."""

    root: Path  # the workspace tree holding the result
    files: tuple[FileDiff, ...] = field(default_factory=tuple)
    gitlinks: tuple[str, ...] = ()  # paths turned into embedded repositories (mode 160000)
    patch: str = ""  # the unified diff, for people to read
    head: str | None = None  # the result commit this is the diff of (None: no result)

    @property
    def changes(self) -> list[FileChange]:
        return [f.change for f in self.files]

    @property
    def lines_changed(self) -> int:
        return sum(f.change.lines_added + f.change.lines_removed for f in self.files)

    def _by_path(self) -> dict[str, FileDiff]:
        index = self.__dict__.get("_index")
        if index is None:
            index = {f.path: f for f in self.files}
            object.__setattr__(self, "_index", index)
        return index

    def read(self, path: str) -> bytes | None:
        """The file's content after the change; None when it was deleted."""
        diff = self._by_path().get(path)
        if diff is not None and diff.change.kind is ChangeKind.DELETED:
            return None
        target = self.root / path
        if target.is_symlink() or not target.is_file():
            return None
        return target.read_bytes()
