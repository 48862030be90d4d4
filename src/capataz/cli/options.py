"""Options every command spells the same way: ``--repo/-C`` and ``--json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["JsonOption", "RepoOption"]

RepoOption = Annotated[Path, typer.Option("--repo", "-C", help="The repository (default: here).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
