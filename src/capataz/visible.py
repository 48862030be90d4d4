"""Untrusted text made safe for a terminal: control characters shown, not obeyed.

Agents choose their output, file names, commit titles and much of what ends up in a
reason or a violation. A terminal obeys ESC sequences (CSI clears the screen, OSC 52
writes the clipboard, OSC 8 forges links), their one-byte C1 forms (U+0080 to U+009F),
carriage returns and backspaces, so printing such text lets an agent rewrite what the
user sees — a forged "✓ landed" line under a real "blocked". Every sink escapes with
:func:`visible` (the run log, the live view, the summaries) and JSON goes through
:func:`visible_json`, so there is one definition of "safe" to review."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["visible", "visible_json"]

_CONTROLS = (*range(0x20), *range(0x7F, 0xA0))  # C0, DEL, C1
_ESCAPED = {code: f"\\x{code:02x}" for code in _CONTROLS if code != 0x09}
_ESCAPED_KEEP_LINES = {code: text for code, text in _ESCAPED.items() if code != 0x0A}
# json.dumps escapes C0 itself; DEL and C1 it passes through when ensure_ascii is off.
_RAW_IN_JSON = re.compile("[\x7f-\x9f]")


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character but tab written as ``\\xNN``; with
    ``newlines``, line feeds are kept (a multi-line log tail)."""
    return text.translate(_ESCAPED_KEEP_LINES if newlines else _ESCAPED)


def visible_json(data: Any, *, indent: int | None = 2) -> str:
    """JSON that a terminal cannot be steered by: C0 as JSON escapes (json's own), DEL
    and C1 as ``\\u00XX``; other text stays readable (not ASCII-only)."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
