"""Git inside the sandbox: capataz's own settings, the agent's on top, and an identity.

Why this module: git reads extra configuration from the environment as numbered entries
(``GIT_CONFIG_COUNT``, ``GIT_CONFIG_KEY_n``, ``GIT_CONFIG_VALUE_n``). capataz needs one
(``safe.directory``: the workspace's git directory belongs to another uid), and an
agent's ``env`` may bring its own (``core.editor``, say). A plain dict merge would let
the agent's ``GIT_CONFIG_COUNT=1`` silently replace capataz's entry, and git would then
refuse the repository: the agent's edits were lost and the run said "no-changes". So the
two lists are concatenated, capataz's first, the agent's renumbered after them.

The sandbox's HOME is an empty tmpfs, so an agent that commits (or, like aider through
GitPython, reads ``user.name`` from the config files and writes the repository's own
config when it finds none, which is read-only here) had no identity. Every sandboxed
command therefore gets a small global config, :data:`GITCONFIG`, written as
``$HOME/.gitconfig``: a file, not environment entries, because GitPython reads files.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["GITCONFIG", "GITCONFIG_NAME", "git_env", "merge_env"]

GITCONFIG_NAME = ".gitconfig"
GITCONFIG = "[user]\n\tname = capataz agent\n\temail = agent@capataz.invalid\n"

_COUNT = "GIT_CONFIG_COUNT"
_KEY = "GIT_CONFIG_KEY_"
_VALUE = "GIT_CONFIG_VALUE_"


def git_env(has_git_dir: bool) -> dict[str, str]:
    """capataz's own git settings for a command that sees the workspace's git directory:
    trust a repository owned by someone else, and never take its locks."""
    if not has_git_dir:
        return {}
    return {
        _COUNT: "1",
        f"{_KEY}0": "safe.directory",
        f"{_VALUE}0": "*",
        "GIT_OPTIONAL_LOCKS": "0",
    }


def _entries(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The numbered config entries ``env`` declares (none when its count is not a
    number: git itself would refuse such an environment)."""
    try:
        count = int(env.get(_COUNT, "0"))
    except ValueError:
        return []
    found = []
    for index in range(max(count, 0)):
        key = env.get(f"{_KEY}{index}")
        if key is not None:
            found.append((key, env.get(f"{_VALUE}{index}", "")))
    return found


def _is_config(name: str) -> bool:
    return name == _COUNT or name.startswith((_KEY, _VALUE))


def merge_env(ours: Mapping[str, str], theirs: Mapping[str, str]) -> dict[str, str]:
    """``theirs`` over ``ours``, except the git config entries: both lists are kept,
    ours first, theirs renumbered after them (git lets a later entry override an
    earlier one, so the agent can still change a setting; it cannot drop ours)."""
    merged = {k: v for k, v in ours.items() if not _is_config(k)}
    merged.update({k: v for k, v in theirs.items() if not _is_config(k)})
    entries = _entries(ours) + _entries(theirs)
    if entries:
        merged[_COUNT] = str(len(entries))
        for index, (key, value) in enumerate(entries):
            merged[f"{_KEY}{index}"] = key
            merged[f"{_VALUE}{index}"] = value
    return merged
