"""Options every command spells the same way: ``--repo/-C``, ``--json`` and
``--budget`` (parsed by the one intake, so exec and task add read it alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["BudgetOption", "JsonOption", "RepoOption"]

RepoOption = Annotated[Path, typer.Option("--repo", "-C", help="The repository (default: here).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
BudgetOption = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help=(
            "Stop the run past this: tokens (200k, 1.5M), dollars (2.5usd, $2.5) or "
            "both (200k,2.5usd); over the agent's [agents.X] budget."
        ),
    ),
]
