"""Glob patterns for repository-relative POSIX paths, as ``[policy].forbidden_paths`` uses them.

The rules are gitignore's ``**`` rules with ``fnmatch``'s surprises removed, because a
policy that silently matches too much (or too little) is worse than none:

- patterns are anchored at the repository root; a leading ``/`` is allowed and ignored;
- ``*`` matches any run of characters except ``/``; ``?`` one character except ``/``;
- ``[abc]``, ``[a-z]``, ``[!abc]`` (or ``[^abc]``) are character classes, never matching ``/``;
- ``**`` as a whole segment matches zero or more directories: ``**/*.pem`` matches
  ``key.pem`` and ``a/b/key.pem``; ``legacy/**`` matches everything under ``legacy/``;
  ``a/**/b`` matches ``a/b`` and ``a/x/y/b``; ``**`` inside a segment acts like ``*``;
- a trailing ``/`` means "this directory": ``legacy/`` is ``legacy/**``;
- a pattern without any wildcard names a file or a directory literally, so ``secrets``
  matches ``secrets`` and everything under ``secrets/`` (a user who lists a directory
  means its contents, and nothing else could match it);
- ``\\x`` matches the character ``x`` literally.

Each pattern is translated to one regular expression once (cached) and matched with
``fullmatch``, so checking every changed file against every pattern stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["compile_glob", "match_any", "match_glob", "normalize_path"]

_WILDCARDS = frozenset("*?[\\")


def normalize_path(path: str) -> str:
    """Repository-relative POSIX form: no leading ``./`` or ``/``, no doubled slashes.

    Diff tools disagree on these details; normalising both sides keeps a pattern from
    missing a file over spelling alone."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/".join(parts)


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The compiled regular expression for ``pattern`` (see the module docstring)."""
    return re.compile(_translate(pattern))


def match_glob(path: str, pattern: str) -> bool:
    """Whether the repository-relative ``path`` matches the glob ``pattern``."""
    return compile_glob(pattern).fullmatch(normalize_path(path)) is not None


def match_any(path: str, patterns: Iterable[str]) -> str | None:
    """The first pattern (in the caller's order) that ``path`` matches, or None.

    Returning the pattern rather than a bool lets a violation name the rule that fired."""
    normalized = normalize_path(path)
    for pattern in patterns:
        if compile_glob(pattern).fullmatch(normalized) is not None:
            return pattern
    return None


def _translate(pattern: str) -> str:
    """Regex source for a glob; built segment by segment so ``/`` is never crossed by accident."""
    directory = pattern.endswith("/")
    segments = [seg for seg in pattern.strip().split("/") if seg]
    if not segments:
        return r"(?!)"  # an empty pattern matches nothing rather than everything
    if directory:
        segments.append("**")
    literal = not any(ch in _WILDCARDS for seg in segments for ch in seg)
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            # Trailing: anything below; elsewhere: zero or more whole directories.
            out.append(".+" if index == last else "(?:[^/]+/)*")
            continue
        out.append(_segment(segment))
        if index != last:
            out.append("/")
    if literal:
        out.append("(?:/.+)?")
    return "".join(out)


def _segment(segment: str) -> str:
    """Regex for one path segment (no ``/`` inside)."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            klass, i = _char_class(segment, i)
            out.append(klass)
            continue
        elif ch == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _char_class(segment: str, start: int) -> tuple[str, int]:
    """Translate ``[...]`` at ``segment[start]``; returns the regex and the index after it.

    An unclosed ``[`` is a literal bracket, as in gitignore, so a typo cannot turn into an
    invalid regular expression at gate time."""
    i = start + 1
    negate = i < len(segment) and segment[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < len(segment) and segment[i] == "]":
        i += 1  # a leading ']' is a member, not the end
    while i < len(segment) and segment[i] != "]":
        i += 1
    if i >= len(segment):
        return re.escape("["), start + 1
    body = _class_body(segment[body_start:i])
    regex = f"[^/{body}]" if negate else f"(?!/)[{body}]"
    return regex, i + 1


def _class_body(body: str) -> str:
    """Escape every member so only ranges keep their meaning; a reversed range is literal."""
    items: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-" and body[k] <= body[k + 2]:
            items.append(f"{re.escape(body[k])}-{re.escape(body[k + 2])}")
            k += 3
        else:
            items.append(re.escape(body[k]))
            k += 1
    return "".join(items)
