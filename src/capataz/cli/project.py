"""Opening the project: what most commands need first, the repository and its
validated configuration. (Not to be confused with ``context_cmds``: the context tasks
publish for their dependents.)"""

from __future__ import annotations

from pathlib import Path

from capataz.cli.console import err
from capataz.config import Config, load_config
from capataz.workspace.repo import Repository

__all__ = ["open_project", "warn_unsandboxed"]


def open_project(path: Path) -> tuple[Repository, Config]:
    repo = Repository.discover(path.resolve())
    return repo, load_config(repo.root)


def warn_unsandboxed(config: Config) -> None:
    if config.project.sandbox == "none":
        err.print(
            '[bold red]WARNING:[/] sandbox = "none": agents run with your user\'s full '
            "access to this machine (files, network, processes). Use only for trusted agents."
        )
