"""The rules every context entry obeys, wherever it comes from (a task's publication,
``capataz context set``, the library): what a key may look like, what a value may be,
and how an agent's ``context_read``/``context_write`` globs match keys.

Kept apart from :mod:`capataz.context.store` so that the pipeline can check a
publication without importing the database layer."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from capataz.errors import CapatazError

__all__ = [
    "MAX_VALUE_BYTES",
    "ContextError",
    "NoContextEntry",
    "allowed",
    "check_key",
    "encode_value",
]

MAX_VALUE_BYTES = 64 * 1024  # per value, JSON-encoded: context is for results, not files
_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")
_KEY_RULE = "1 to 200 letters, digits and _ . : / - (e.g. build.version)"


class ContextError(CapatazError):
    """A context key is invalid or unknown, or a value cannot be stored."""


class NoContextEntry(ContextError):
    """The key has no (unexpired) entry: exit 1, like grep finding nothing, so scripts
    can tell "absent" from "wrong" (exit 2)."""

    exit_code = 1

    def __init__(self, key: str) -> None:
        super().__init__(f"no context entry {key}", fix="`capataz context list` shows the keys")


def check_key(key: str) -> str:
    """Keys appear in globs, file contents and command lines: keep them to a plain set."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ContextError(f"{key!r} is not a context key", fix=f"use {_KEY_RULE}")
    return key


def encode_value(key: str, value: Any) -> str:
    """The JSON text of ``value``; refused when it is not JSON (NaN included) or is
    larger than :data:`MAX_VALUE_BYTES`."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContextError(
            f"the value of {key} is not JSON ({exc})",
            fix="use strings, numbers, booleans, null, lists and objects",
        ) from None
    size = len(text.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise ContextError(
            f"the value of {key} is {size} bytes; the limit is {MAX_VALUE_BYTES}",
            fix="publish a smaller value (a path, a URL or a digest instead of the content)",
        )
    return text


def allowed(key: str, patterns: Sequence[str]) -> bool:
    """Whether ``key`` matches one of an agent's globs (``*`` matches any run of
    characters, ``/`` and ``.`` included; ``?`` one; ``[...]`` a class)."""
    return any(fnmatchcase(key, pattern) for pattern in patterns)
