"""Paths no agent may change, whatever the policy says: capataz's own configuration and
state. A result that rewrote capataz.toml could turn the sandbox off (or point it at a
program of its choosing) for every later run; one that wrote into .capataz/ could forge
another task's escalation answer or progress."""

from __future__ import annotations

from collections.abc import Iterable

from capataz.config import CONFIG_FILE
from capataz.gates.paths import match_any
from capataz.models import Severity, Violation, ViolationType
from capataz.workspace.changes import ChangeSet

__all__ = ["protected_path_violations", "protected_patterns"]


def protected_patterns(progress_dir: str) -> list[str]:
    progress = progress_dir.strip("/")
    return [CONFIG_FILE, ".capataz", ".capataz/**", progress, f"{progress}/**"]


def protected_path_violations(changes: ChangeSet, patterns: Iterable[str]) -> list[Violation]:
    found = []
    patterns = list(patterns)
    for diff in changes.files:
        hit = match_any(diff.path, patterns)
        if hit is None:
            continue
        found.append(
            Violation(
                type=ViolationType.FORBIDDEN_PATH,
                severity=Severity.CRITICAL,
                file=diff.path,
                details=f"{diff.path} is capataz's own configuration or state ({hit!r})",
                suggestion="agents may not change capataz.toml or .capataz/; "
                "a human edits those by hand",
                gate="protected",
            )
        )
    return found
