"""Masking secret values wherever text leaves capataz: ``***NAME***`` instead.

A value is looked for as printed, and in the encodings an agent's output commonly puts
it in: base64 (standard and URL-safe, at any of the three byte alignments, so a value
inside a longer encoded text is found too), base32 (any of the five alignments, upper
and lower case), percent-encoding (``quote`` and ``quote_plus``), hex (both cases) and
UTF-16 (LE and BE, as text decodes it: a NUL beside every ASCII character). A value with
line breaks is also looked for without them, because output is split into lines.
Matching is one compiled alternation, longest form first, so a text is scanned once
however many secrets there are.

:meth:`Redactor.byte_forms` gives the same forms as bytes (plus the raw UTF-16 bytes
of values that are not ASCII) for scanning file contents, which are not text. Values shorter than
:data:`MIN_LENGTH` are not masked (masking "a" would shred every log) — the vault
refuses to store them for agents, see ``Vault.set``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "HOLD_PREFIX",
    "MIN_LENGTH",
    "Redactor",
    "active",
    "add",
    "encoded_forms",
    "install",
    "redact",
    "redact_data",
]

MIN_LENGTH = 6
# An unfinished form at a line's end at least this long holds the line back (see
# ``open_prefix``); a shorter one is shown, at most this many characters less one.
HOLD_PREFIX = 4
# Up to this many forms (about 25 secrets) one regular expression is fastest.
_REGEX_FORMS = 400
# A base64 core shorter than this could occur by chance in unrelated text.
_MIN_ENCODED = 8


_ALIGNED: tuple[tuple[Callable[[bytes], bytes], int, int], ...] = (
    (base64.b64encode, 3, 4),  # (encoder, bytes per group, characters per group)
    (base64.urlsafe_b64encode, 3, 4),
    (base64.b32encode, 5, 8),
)


def _aligned_cores(raw: bytes) -> set[str]:
    """The base64 and base32 text that ``raw`` produces wherever it sits in a longer
    input: for each alignment, the characters that depend on ``raw``'s bytes alone."""
    cores = set()
    for encode, group_in, group_out in _ALIGNED:
        for offset in range(group_in):
            text = encode(b"\0" * offset + raw).decode("ascii")
            first = group_out if offset else 0  # the group holding the filler bytes
            whole = (offset + len(raw)) // group_in  # groups made of real bytes only
            core = text[first : whole * group_out]
            if len(core) >= _MIN_ENCODED:
                cores.add(core)
        plain = encode(raw).decode("ascii")
        cores.add(plain)  # the whole value encoded alone, padding included
        cores.add(plain.rstrip("="))
    cores |= {core.lower() for core in cores if core.isupper()}  # base32 in lower case
    return cores


def _utf16(value: str) -> list[bytes]:
    return [value.encode("utf-16-le"), value.encode("utf-16-be")]


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` the redactor masks."""
    raw = value.encode("utf-8")
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    flat = value.replace("\r", "").replace("\n", "")
    if flat != value:  # printed over several lines: see LineSplitter
        forms |= {flat, quote(flat, safe="")}
    forms |= {binascii.hexlify(raw).decode("ascii"), binascii.hexlify(raw).decode().upper()}
    forms |= _aligned_cores(raw)
    for wide in _utf16(value):  # text holds UTF-16 as a NUL beside each ASCII character
        with contextlib.suppress(UnicodeDecodeError):
            forms.add(wide.decode("utf-8"))
    return {form for form in forms if len(form) >= min(MIN_LENGTH, len(value))}


class Redactor:
    """Masks the values of ``secrets`` (name -> value) in text and in JSON-like data.

    Few secrets (the usual case): one compiled alternation, a few microseconds a line.
    Many: compiling and running an alternation of thousands of forms costs about a
    second and a third of a millisecond a line, so the forms are instead indexed by
    their first :data:`MIN_LENGTH` characters and the text is scanned once, a dictionary
    lookup per position, whatever their number. Both pick the longest form at the
    leftmost position."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(secrets or {})
        self._names: dict[str, str] = {}
        for name, value in sorted(self.values.items()):
            if len(value) < MIN_LENGTH:
                continue
            for form in encoded_forms(value):
                self._names.setdefault(form, name)
        forms = sorted(self._names, key=len, reverse=True)
        self._longest = len(forms[0]) if forms else 0
        self._heads: dict[str, list[str]] | None = None  # built on first open_prefix
        self._short: set[str] = set()
        self._bytes: dict[bytes, str] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._by_prefix: dict[str, list[str]] = {}
        if len(forms) <= _REGEX_FORMS:
            self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        else:
            for form in forms:  # longest first within each prefix
                self._by_prefix.setdefault(form[:MIN_LENGTH], []).append(form)

    def __bool__(self) -> bool:
        return bool(self._names)

    @property
    def names(self) -> set[str]:
        return set(self._names.values())

    def _matches(self, text: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, secret name) of every masked form in ``text``, left to right."""
        if self._pattern is not None:
            for m in self._pattern.finditer(text):
                yield m.start(), m.end(), self._names[m.group(0)]
            return
        index, last = 0, len(text) - MIN_LENGTH
        by_prefix = self._by_prefix
        while index <= last:
            candidates = by_prefix.get(text[index : index + MIN_LENGTH])
            if candidates:
                for form in candidates:
                    if text.startswith(form, index):
                        yield index, index + len(form), self._names[form]
                        index += len(form)
                        break
                else:
                    index += 1
            else:
                index += 1

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, secret name) of every masked form in ``text``, left to right."""
        return list(self._matches(text)) if self._names else []

    def open_prefix(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins some form without
        finishing it: how much of a secret a line could have started printing before a
        line break (see ``LineSplitter``). Ends shorter than :data:`HOLD_PREFIX` are
        looked up in a small set; longer ones by their first :data:`HOLD_PREFIX`
        characters, so a line costs one dictionary lookup per position near its end."""
        if not self._names or not text:
            return 0
        if self._heads is None:
            self._heads, self._short = {}, set()
            for form in self._names:
                self._heads.setdefault(form[:HOLD_PREFIX], []).append(form)
                self._short.update(form[:size] for size in range(1, HOLD_PREFIX))
        heads, short, size = self._heads, self._short, len(text)
        for index in range(max(0, size - self._longest + 1), size):
            rest = size - index
            if rest < HOLD_PREFIX:
                if text[index:] in short:
                    return rest
                continue
            candidates = heads.get(text[index : index + HOLD_PREFIX])
            if candidates:
                tail = text[index:]
                if any(len(form) > rest and form.startswith(tail) for form in candidates):
                    return rest
        return 0

    def byte_forms(self) -> dict[bytes, str]:
        """Every masked form as bytes (name by form), plus the UTF-16 bytes of each
        value: what a file's content is searched for. Built once per redactor."""
        if self._bytes is None:
            found = {form.encode("utf-8"): name for form, name in self._names.items()}
            for name, value in sorted(self.values.items()):
                if len(value) >= MIN_LENGTH:
                    for wide in _utf16(value):
                        found.setdefault(wide, name)
            self._bytes = found
        return self._bytes

    def redact(self, text: str) -> str:
        if not self._names or not text:
            return text
        if self._pattern is not None:
            return self._pattern.sub(lambda m: f"***{self._names[m.group(0)]}***", text)
        pieces, done = [], 0
        for start, end, name in self._matches(text):
            pieces += [text[done:start], f"***{name}***"]
            done = end
        return "".join(pieces) + text[done:] if pieces else text

    def redact_data(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, strings; anything else as is) with every
        string masked: for events, API answers and stored details."""
        if not self._names:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(item) for item in value]
        return value

    def leaks(self, text: str) -> list[str]:
        """The names of secrets whose value (in any masked form) ``text`` contains."""
        return sorted({name for _, _, name in self._matches(text)}) if self._names else []


# -- the process's redactor ----------------------------------------------------------
#
# Redaction is process-wide on purpose: every sink capataz writes through (sandbox
# output lines, the run log, progress files, the store's logs, events, audit entries and
# run details, API answers, CLI errors) asks :func:`redact`, so a value is masked
# whichever agent or task printed it. The values come from a provider (the vault),
# read again at most every ``refresh`` seconds so a secret set elsewhere (the panel, a
# second machine) is masked soon after.

_provider: Callable[[], Mapping[str, str]] | None = None
_current = Redactor()
_pending: dict[str, str] = {}  # added since the masks were last built
_loaded_at = 0.0
_refresh = 5.0
_lock = threading.Lock()
log = logging.getLogger("capataz.redaction")


def install(provider: Callable[[], Mapping[str, str]] | None, *, refresh: float = 5.0) -> None:
    """Mask the values ``provider`` returns (None: mask nothing). Loads them now, so a
    wrong master key fails here, where the caller can report it."""
    global _provider, _current, _loaded_at, _refresh  # noqa: PLW0603 - the one process-wide state
    with _lock:
        _provider, _refresh = provider, refresh
        _pending.clear()
        _current = Redactor(provider()) if provider is not None else Redactor()
        _loaded_at = time.monotonic()


def add(values: Mapping[str, str]) -> None:
    """Mask these values too, from the next write on (a secret this process just stored
    or fetched). Cheap: the masks are rebuilt once, when next used."""
    with _lock:
        _pending.update(values)


def active() -> Redactor:
    global _current, _loaded_at  # noqa: PLW0603
    if _pending or (_provider is not None and time.monotonic() - _loaded_at > _refresh):
        with _lock:
            wanted = {**_current.values, **_pending}
            _pending.clear()
            if _provider is not None and time.monotonic() - _loaded_at > _refresh:
                _loaded_at = time.monotonic()
                try:
                    wanted.update(_provider())
                except Exception as exc:  # noqa: BLE001 - keep masking what we know
                    log.warning("cannot reload secrets to mask: %s", exc)
            if wanted != _current.values:  # rebuilding the pattern is the costly part
                _current = Redactor(wanted)
    return _current


def redact(text: str) -> str:
    return active().redact(text)


def redact_data(value: Any) -> Any:
    return active().redact_data(value)
