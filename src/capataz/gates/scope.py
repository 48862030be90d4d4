"""Out of scope: a PRD task whose result or whose own criterion touches what its PRD
lists under "Out of Scope" (``OUT_OF_SCOPE``, naming the item).

The items are given as the PRD wrote them (the pipeline reads the PRD at the run's
base commit, from capataz's own git: the agent's tree could have edited it). Each
item's code spans (between backticks) are its patterns:

- a path-like span (it holds a ``/``, a ``*`` or ends in a file extension, such as
  ``src/legacy/``, ``**/*.sql`` or ``setup.py``) matches changed files, as
  ``[policy] forbidden_paths`` does (:mod:`capataz.gates.paths`: anchored at the
  repository's root, a literal path matches the file or everything under the
  directory);
- any other span (``captcha``, ``rate_limit()``) matches an added line that holds it
  as a whole word.

Besides, the criterion's own text (its title, checklist and notes; not the composed
instruction, which lists the out-of-scope items on purpose, as "do not do") that
contains an item's plain text, without case or accents, is out of scope from the
start: the criterion asks for what the PRD excludes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from capataz.gates.paths import match_glob
from capataz.models import Severity, Violation, ViolationType
from capataz.workspace.changes import ChangeSet

__all__ = ["item_patterns", "out_of_scope_violations"]

_CODE = re.compile(r"`+([^`]+?)`+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")
_GATE = "scope"


def item_patterns(item: str) -> tuple[list[str], list[str]]:
    """The item's code spans, split into path patterns and words."""
    paths: list[str] = []
    words: list[str] = []
    for span in (match.strip() for match in _CODE.findall(item)):
        if not span:
            continue
        if "/" in span or "*" in span or _EXTENSION.search(span):
            paths.append(span)
        else:
            words.append(span)
    return paths, words


def out_of_scope_violations(
    items: Sequence[str],
    *,
    source: str,
    criterion: str,
    changes: ChangeSet | None,
    severity: Severity,
) -> list[Violation]:
    """One violation per item the criterion's text asks for, and per changed file an
    item's path or word matches (its first added line holding the word). ``source``
    names the PRD (``docs/prd/x.md``) in the details."""
    found: list[Violation] = []
    said = _plain(criterion)
    for item in items:
        plain = _plain(_CODE.sub(lambda match: match[1], item)).rstrip(".;:")
        if plain and re.search(rf"(?<!\w){re.escape(plain)}(?!\w)", said):
            found.append(
                _violation(
                    severity,
                    item,
                    source,
                    f"the criterion itself asks for {item!r}, which {source} lists as out of scope",
                )
            )
        if changes is None:
            continue
        paths, words = item_patterns(item)
        for diff in changes.files:
            hit = next((pattern for pattern in paths if match_glob(diff.path, pattern)), None)
            if hit is not None:
                found.append(
                    _violation(
                        severity,
                        item,
                        source,
                        f"{diff.path} matches {hit!r} of the out-of-scope item {item!r} "
                        f"of {source}",
                        file=diff.path,
                    )
                )
                continue
            line = _first_word(diff.added, words)
            if line is not None:
                number, word = line
                found.append(
                    _violation(
                        severity,
                        item,
                        source,
                        f"{diff.path}:{number} adds {word!r} of the out-of-scope item {item!r} "
                        f"of {source}",
                        file=diff.path,
                        line=number,
                    )
                )
    return found


def _first_word(added: Sequence[tuple[int, str]], words: Sequence[str]) -> tuple[int, str] | None:
    patterns = [(word, re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")) for word in words]
    for number, text in added:
        for word, pattern in patterns:
            if pattern.search(text):
                return number, word
    return None


def _violation(
    severity: Severity,
    item: str,
    source: str,
    details: str,
    *,
    file: str | None = None,
    line: int | None = None,
) -> Violation:
    return Violation(
        type=ViolationType.OUT_OF_SCOPE,
        severity=severity,
        details=details,
        suggestion=f"leave {item!r} out, as {source} says; or change its Out of Scope list",
        file=file,
        line=line,
        gate=_GATE,
    )


def _plain(text: str) -> str:
    """Compared without case, accents or line breaks."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.split())
