"""capataz's own directory in a repository, ``.capataz/``: created with a ``.gitignore``
of its own (like .pytest_cache), so the database, progress files and workspaces never
end up in a user's commit even before `capataz init` added the ignore rule."""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATE_DIR", "state_dir"]

STATE_DIR = ".capataz"


def state_dir(repo_root: Path) -> Path:
    path = repo_root / STATE_DIR
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by capataz: nothing here belongs in git\n*\n")
    return path
