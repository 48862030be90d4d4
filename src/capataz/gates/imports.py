"""Find the modules a source file imports, with line numbers, without running anything.

The policy gate asks one question: did the agent add an import of a forbidden module?
That needs the import statements of the *new* file and the lines each one spans, so a
statement is blamed on the agent when any of its lines was added (an agent that adds
``b,`` to an existing multi-line ``from legacy import (a, ...)`` did import from legacy).

- Python uses :mod:`ast`, which sees through strings, comments and line continuations.
  A file that does not parse is scanned with a line regex instead: a broken file must not
  hide an import (a false positive is cheap, a miss is not).
- JavaScript/TypeScript use regexes over the text with comments blanked out (strings and
  line numbers preserved). Text inside string literals is not blanked, so a string that
  *looks* like an import is reported too; again, conservative.

Every :class:`ImportRef` reports the line of its ``import``/``from``/``export``/``require``
keyword, i.e. the line where the statement starts, in both languages.
"""

from __future__ import annotations

import ast
import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

__all__ = [
    "ImportRef",
    "Language",
    "find_imports",
    "forbidden_entry",
    "language_of",
    "scan_javascript",
    "scan_python",
]


class Language(StrEnum):
    PYTHON = "python"
    JAVASCRIPT = "javascript"  # also TypeScript: same module syntax


_EXTENSIONS: dict[str, Language] = {
    ".py": Language.PYTHON,
    ".pyi": Language.PYTHON,
    ".pyw": Language.PYTHON,
    **{
        ext: Language.JAVASCRIPT
        for ext in (".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts")
    },
}


@dataclass(frozen=True)
class ImportRef:
    """One imported module. ``names`` are what ``from m import a, b`` takes (Python only)."""

    module: str
    line: int  # where the statement starts (1-based)
    end_line: int  # where it ends; equal to ``line`` for one-line statements
    names: tuple[str, ...] = ()
    relative: bool = False  # Python ``from . import x`` / ``from ..m import x``

    def spans(self, lines: Iterable[int]) -> bool:
        """Whether any of ``lines`` falls inside this statement."""
        return any(self.line <= number <= self.end_line for number in lines)


def language_of(path: str) -> Language | None:
    """The language whose import syntax applies to ``path``, by extension; None if unknown."""
    return _EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def find_imports(path: str, text: str) -> list[ImportRef]:
    """Imports of ``text`` read as the language of ``path``; [] for other files."""
    language = language_of(path)
    if language is Language.PYTHON:
        return scan_python(text)
    if language is Language.JAVASCRIPT:
        return scan_javascript(text)
    return []


def forbidden_entry(ref: ImportRef, entries: Iterable[str], language: Language) -> str | None:
    """The first entry of ``[policy].forbidden_imports`` that forbids ``ref``, or None.

    Entry ``E`` forbids module ``M`` when ``M == E`` or ``M`` is below ``E`` (``E.sub`` in
    Python, ``E/sub`` in JavaScript, which also covers ``@scope`` and ``@scope/pkg``). In
    Python ``from E import sub`` is checked as ``E.sub`` too, so forbidding a submodule
    catches both spellings. Relative imports are never forbidden: without knowing the
    package root they name no stable module."""
    if ref.relative:
        return None
    candidates = _candidates(ref, language)
    for entry in entries:
        name = entry.strip()
        if name and any(_is_within(module, name, language) for module in candidates):
            return entry
    return None


def _candidates(ref: ImportRef, language: Language) -> list[str]:
    if language is Language.PYTHON:
        return [ref.module, *(f"{ref.module}.{name}" for name in ref.names if name != "*")]
    # `node:fs` is `fs`: forbidding a builtin must not be bypassed with the prefix.
    return [ref.module, ref.module.removeprefix("node:")]


def _is_within(module: str, entry: str, language: Language) -> bool:
    separator = "." if language is Language.PYTHON else "/"
    return module == entry or module.startswith(entry.rstrip(separator) + separator)


# --------------------------------------------------------------------------- Python


def scan_python(text: str) -> list[ImportRef]:
    """Imports of Python source; falls back to a line regex when it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: NUL bytes (Python 3.11); RecursionError: absurd nesting.
        return _scan_python_lines(text)
    return sorted(_python_nodes(tree), key=lambda ref: (ref.line, ref.module))


def _python_nodes(tree: ast.AST) -> Iterator[ImportRef]:
    for node in ast.walk(tree):
        end = getattr(node, "end_lineno", None)
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportRef(alias.name, node.lineno, end or node.lineno)
        elif isinstance(node, ast.ImportFrom):
            yield _from_import(node, end or node.lineno)
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)):
            yield ImportRef(module, node.lineno, end or node.lineno)


def _from_import(node: ast.ImportFrom, end: int) -> ImportRef:
    names = tuple(alias.name for alias in node.names)
    module = "." * node.level + (node.module or "")
    return ImportRef(module, node.lineno, end, names=names, relative=node.level > 0)


def _dynamic_import(call: ast.Call) -> str | None:
    """``__import__("m")`` and ``importlib.import_module("m")`` with a literal name."""
    func = call.func
    name = None
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Attribute):
        name = func.attr
    if name not in ("__import__", "import_module") or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
        return first.value
    return None


_PY_IMPORT = re.compile(r"(?:^|;)[ \t]*import[ \t]+([^;#\n]+)", re.MULTILINE)
_PY_FROM = re.compile(
    r"(?:^|;)[ \t]*from[ \t]+(\.*)[ \t]*([\w.]*)[ \t]+import\b[ \t]*(\(?)([^;#\n]*)", re.MULTILINE
)
_PY_DYNAMIC = re.compile(r"""(?:__import__|import_module)\s*\(\s*(['"])([\w.]+)\1""")


def _scan_python_lines(text: str) -> list[ImportRef]:
    """Conservative scan of unparsable Python: every ``import``/``from`` line counts."""
    lines = _LineIndex(text)
    refs: list[ImportRef] = []
    for match in _PY_IMPORT.finditer(text):
        line = lines.line_of(match.start(1))
        for part in match.group(1).replace("(", " ").split(","):
            module = _leading_name(part)
            if _is_dotted_name(module):
                refs.append(ImportRef(module, line, line))
    refs.extend(
        ref for match in _PY_FROM.finditer(text) if (ref := _fallback_from(match, text, lines))
    )
    for match in _PY_DYNAMIC.finditer(text):
        line = lines.line_of(match.start())
        refs.append(ImportRef(match.group(2), line, line))
    return sorted(refs, key=lambda ref: (ref.line, ref.module))


def _fallback_from(match: re.Match[str], text: str, lines: _LineIndex) -> ImportRef | None:
    """``from m import a, b`` or ``from m import (`` up to its ``)``, which spans lines."""
    dots, module, paren, rest = match.group(1, 2, 3, 4)
    if not dots and not _is_dotted_name(module):
        return None
    line = end = lines.line_of(match.start(2))
    if paren and ")" not in rest and (close := text.find(")", match.end())) >= 0:
        rest, end = text[match.start(4) : close], lines.line_of(close)
    rest = re.sub(r"#[^\n]*", "", rest)
    names = tuple(name for part in rest.split(",") if (name := _leading_name(part)))
    return ImportRef(dots + module, line, end, names=names, relative=bool(dots))


def _leading_name(text: str) -> str:
    """The dotted name a fragment starts with (``"a.b as c"`` → ``"a.b"``); "" if none.

    Taking only name characters keeps stray bytes glued to a name from hiding it."""
    match = re.match(r"\s*([^\W\d][\w.]*)", text)
    return match.group(1).rstrip(".") if match else ""


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


# --------------------------------------------------------------------------- JavaScript

_NOT_AFTER = r"(?<![\w$.])"  # not part of a longer identifier, not a property access
_JS_PATTERNS: tuple[re.Pattern[str], ...] = (
    # import x from 'm' / import {a, b as c} from "m" / import type {T} from 'm'
    # export * from 'm' / export {a} from 'm' / export type {T} from 'm' (possibly multi-line)
    re.compile(
        _NOT_AFTER
        + r"""(?:import|export)\b\s*(?:type\b\s*)?"""  # keyword, TypeScript's `type`
        + r"""(?:[\w$]+\s*,?\s*)?"""  # default binding
        + r"""(?:\*\s*(?:as\s+[\w$]+\s*)?|\{[^{}'";]*\}\s*)?"""  # * as ns | { a, b as c }
        + r"""from\s*(['"])([^'"\n]+)\1"""
    ),
    # import 'm' (side effects only)
    re.compile(_NOT_AFTER + r"""import\s*(['"])([^'"\n]+)\1"""),
    # import('m'), require('m'), including TypeScript's `import x = require('m')`
    re.compile(_NOT_AFTER + r"""(?:import|require)\s*\(\s*(['"`])([^'"`\n]+)\1\s*[,)]"""),
)


def scan_javascript(text: str) -> list[ImportRef]:
    """Imports of JavaScript/TypeScript source, ignoring ones inside comments."""
    code = blank_js_comments(text)
    lines = _LineIndex(code)
    found: dict[tuple[int, str], ImportRef] = {}
    for pattern in _JS_PATTERNS:
        for match in pattern.finditer(code):
            module = match.group(2).strip()
            if not module or "${" in module:
                continue  # a template with substitutions names no fixed module
            start, end = lines.line_of(match.start()), lines.line_of(match.end() - 1)
            found.setdefault((match.start(), module), ImportRef(module, start, end))
    return sorted(found.values(), key=lambda ref: (ref.line, ref.module))


def blank_js_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments replaced by spaces, newlines kept.

    Quotes and backslash escapes are tracked so ``'http://x'`` is not a comment. Regex
    literals are not recognised (that needs a parser); the escape rule covers the common
    ``/\\/*/`` case. A mistake here can only blank too little, except for a regex literal
    such as ``/[/*]/``, which is rare enough to accept."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
        elif ch in "'\"`":
            i = _skip_string(text, i)
        elif text.startswith("//", i):
            i = _blank(out, i, _find(text, "\n", i))
        elif text.startswith("/*", i):
            i = _blank(out, i, _find(text, "*/", i + 2) + 2)
        else:
            i += 1
    return "".join(out)


def _skip_string(text: str, start: int) -> int:
    """Index after the string literal at ``start``; '' and "" strings stop at a newline."""
    quote, i = text[start], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i + 1
        if ch == "\n" and quote != "`":
            return i  # unterminated: JavaScript strings do not span lines
        i += 1
    return i


def _find(text: str, needle: str, start: int) -> int:
    index = text.find(needle, start)
    return len(text) if index < 0 else index


def _blank(out: list[str], start: int, end: int) -> int:
    end = min(end, len(out))
    for k in range(start, end):
        if out[k] != "\n":
            out[k] = " "
    return end


class _LineIndex:
    """Offset → 1-based line number, by binary search over the newline offsets."""

    def __init__(self, text: str) -> None:
        self._newlines = [match.start() for match in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1
