"""`capataz init`: a commented capataz.toml and a .gitignore entry for .capataz/.

With ``--agent PRESET`` (repeatable) the file gets a working agent of that preset
(``[agents.<preset>] preset = ...`` and its ``secrets``), the credential request its
key answers (``[[requests]]``, one per secret, naming every agent that needs it) and
that agent as the default. Without it, each preset whose CLI is on PATH is offered as
a commented table, so a new user sees the two lines to uncomment rather than having to
learn the flags of each CLI."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from capataz.agents.preset import Preset
from capataz.agents.presets import PRESETS, preset_named
from capataz.config import CONFIG_FILE, parse_config
from capataz.errors import ConfigError
from capataz.workspace.repo import Repository

__all__ = ["config_template", "found_presets", "init_project"]


def found_presets() -> list[str]:
    """The presets whose CLI is on this machine's PATH."""
    return [name for name, preset in sorted(PRESETS.items()) if shutil.which(preset.executable)]


def _agent_table(preset: Preset, *, commented: bool) -> list[str]:
    lines = [
        f"[agents.{preset.name}]",
        f'preset = "{preset.name}"',
        f'# model = "..."  # {preset.executable}\'s own default when unset',
        f'# endpoint = "{preset.default_endpoint}"',
        f'secrets = ["{preset.credential}"]',
    ]
    if commented:
        return [f"# {line}" if not line.startswith("#") else f"# {line[2:]}" for line in lines]
    return lines


def _requests(chosen: Sequence[Preset]) -> list[str]:
    by_secret: dict[str, list[str]] = {}
    for preset in chosen:
        by_secret.setdefault(preset.credential, []).append(preset.name)
    lines: list[str] = []
    for secret, agents in by_secret.items():
        names = ", ".join(agents) + (" agents" if len(agents) > 1 else " agent")
        lines += [
            "[[requests]]",
            f'id = "REQ-{secret}"',
            f'secret = "{secret}"',
            f'description = "{secret} for the {names} (capataz secret set {secret})"',
            "agents = [" + ", ".join(f'"{a}"' for a in agents) + "]",
            "",
        ]
    return lines


def config_template(
    target_branch: str, agents: Sequence[str] = (), offer: Sequence[str] = ()
) -> str:
    """The commented config; ``agents`` (preset names) become real agents and requests,
    ``offer`` (presets found on PATH) commented ones."""
    text = files("capataz").joinpath("templates/capataz.toml").read_text(encoding="utf-8")
    chosen = [preset_named(name) for name in agents]
    presets: list[str] = []
    for preset in chosen:
        presets += [*_agent_table(preset, commented=False), ""]
    for name in offer:
        if name not in agents:
            preset = preset_named(name)
            presets += [
                f"# `{preset.executable}` is on your PATH: {preset.description}.",
                f"# Uncomment, then `capataz secret set {preset.credential}`:",
                *_agent_table(preset, commented=True),
                "",
            ]
    text = text.replace("{presets}", "\n".join(presets))
    text = text.replace("{requests}", "\n".join(_requests(chosen)))
    if chosen:
        text = text.replace('default_agent = "shell"', f'default_agent = "{chosen[0].name}"')
    return text.replace("{target_branch}", target_branch)


def init_project(repo: Repository, *, force: bool = False, agents: Sequence[str] = ()) -> list[str]:
    """Write the config and ignore rule; returns what was done, one sentence each."""
    done: list[str] = []
    path = repo.root / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", fix="edit it, or pass --force to overwrite it")
    for name in agents:
        preset_named(name)  # an unknown preset: refused with the known ones
    offer = [] if agents else found_presets()
    text = config_template(repo.current_branch() or "main", agents, offer)
    parse_config(text, source=path)  # the template must always be valid
    path.write_text(text, encoding="utf-8")
    done.append(f"wrote {path}")
    for name in dict.fromkeys(agents):
        preset = preset_named(name)
        done.append(
            f"agent {name} (preset {name}) with credential request REQ-{preset.credential}: "
            f"store the key with `capataz secret set {preset.credential}`"
        )
    for name in offer:
        done.append(
            f"found {preset_named(name).executable} on PATH: [agents.{name}] is offered, "
            f"commented (or run `capataz init --force --agent {name}`)"
        )
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
