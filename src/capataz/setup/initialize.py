"""`capataz init`: a commented capataz.toml and a .gitignore entry for .capataz/."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from capataz.config import CONFIG_FILE, parse_config
from capataz.errors import ConfigError
from capataz.workspace.repo import Repository

__all__ = ["config_template", "init_project"]


def config_template(target_branch: str) -> str:
    text = files("capataz").joinpath("templates/capataz.toml").read_text(encoding="utf-8")
    return text.replace("{target_branch}", target_branch)


def init_project(repo: Repository, *, force: bool = False) -> list[str]:
    """Write the config and ignore rule; returns what was done, one sentence each."""
    done: list[str] = []
    path = repo.root / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", fix="edit it, or pass --force to overwrite it")
    text = config_template(repo.current_branch() or "main")
    parse_config(text, source=path)  # the template must always be valid
    path.write_text(text, encoding="utf-8")
    done.append(f"wrote {path}")
    if _ignore(repo.root / ".gitignore", ".capataz/"):
        done.append("added .capataz/ to .gitignore")
    return done


def _ignore(gitignore: Path, entry: str) -> bool:
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if any(line.strip() in (entry, entry.rstrip("/"), "/" + entry) for line in text.splitlines()):
        return False
    prefix = "\n" if text and not text.endswith("\n") else ""
    with gitignore.open("a", encoding="utf-8") as handle:
        handle.write(f"{prefix}{entry}\n")
    return True
