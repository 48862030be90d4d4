"""A result must not carry a secret into the repository: a committed credential would
outlive every mask (history, clones, forks). Any added line holding a vault value — as
printed or in a common encoding, see :mod:`capataz.redaction` — is a critical
violation, so the run is blocked and rolled back whatever the policy says."""

from __future__ import annotations

from capataz import redaction
from capataz.changes import ChangeSet
from capataz.models import Severity, Violation, ViolationType

__all__ = ["secret_leak_violations"]


def secret_leak_violations(changes: ChangeSet) -> list[Violation]:
    masker = redaction.active()
    if not masker:
        return []
    found = []
    for diff in changes.files:
        for number, text in diff.added:
            for name in masker.leaks(text):
                found.append(
                    Violation(
                        type=ViolationType.SECRET_LEAK,
                        severity=Severity.CRITICAL,
                        file=diff.path,
                        line=number,
                        details=f"the line adds the value of secret {name}",
                        suggestion=f"read {name} from the environment at run time; "
                        "never write a credential into the repository",
                        gate="secrets",
                    )
                )
    return found
