"""A result must not carry a secret into the repository: a committed credential would
outlive every mask (history, clones, forks). So every byte that would land is searched
for every vault value — as printed and in each encoding :mod:`capataz.redaction` knows
(base64 at every alignment, base32, hex, URL-encoding, UTF-16LE/BE): the content of
each added or modified blob, text or binary, each file name, each symlink target (a
symlink's blob) and the commit message (built from the task's title or instruction).
Any hit is a critical violation, so the run is blocked and rolled back whatever the
policy says.

The bytes come from git, not from the tree: what lands is the commit. One
``git diff-tree`` names the new blobs and one ``git cat-file --batch`` streams them, a
piece at a time (memory stays bounded for a huge file; each piece overlaps the last by
a form's length so nothing is missed at a seam). With no secret in the vault the gate
returns before starting anything.

Violations name the file — masked, when its name is itself the leak — and the secret,
never the value."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from capataz import redaction
from capataz.errors import GitError
from capataz.models import Severity, Violation, ViolationType
from capataz.redaction import Redactor
from capataz.workspace.git import GIT_TIMEOUT, Git

__all__ = ["secret_leak_violations"]

_CHUNK = 1024 * 1024  # bytes of a blob searched at once
_FIND_FORMS = 400  # up to this many forms, bytes.find per form beats one regex
_SNIFF = 8192  # bytes looked at for a NUL (binary, as git decides)
_SYMLINK, _GITLINK = b"120000", b"160000"
_NO_OBJECT = b"0" * 40


@dataclass(frozen=True)
class _Entry:
    path: bytes
    mode: bytes
    blob: bytes


def secret_leak_violations(git: Git, base: str, head: str | None) -> list[Violation]:
    """The SECRET_LEAK violations of commit ``head`` over ``base`` (none without one)."""
    masker = redaction.active()
    if not masker or head is None:
        return []
    entries = _new_entries(git, base, head)
    found: list[Violation] = []
    for entry in entries:
        for name in _names_in(masker, entry.path):
            found.append(_violation(entry, name, None, "the file name"))
    wanted = [e for e in entries if e.mode != _GITLINK and e.blob != _NO_OBJECT]
    hits = _scan_objects(git, [head.encode(), *(e.blob for e in wanted)], masker)
    for name, _ in sorted(hits.get(0, {}).items()):
        found.append(_violation(None, name, None, "commit message"))
    for index, entry in enumerate(wanted, start=1):
        link = entry.mode == _SYMLINK
        what = "the symlink's target" if link else "the file's content"
        for name, line in sorted(hits.get(index, {}).items()):
            found.append(_violation(entry, name, None if link else line, what))
    return found


def _violation(entry: _Entry | None, name: str, line: int | None, what: str) -> Violation:
    if entry is None:
        details = f"the commit message (the task's title or instruction) holds the value of {name}"
        file = None
    else:
        file = redaction.redact(entry.path.decode("utf-8", errors="replace"))
        details = f"{what} holds the value of secret {name}"
    return Violation(
        type=ViolationType.SECRET_LEAK,
        severity=Severity.CRITICAL,
        file=file,
        line=line,
        details=details,
        suggestion=f"read {name} from the environment at run time; "
        "never write a credential into the repository",
        gate="secrets",
    )


def _names_in(masker: Redactor, data: bytes) -> set[str]:
    text = data.decode("utf-8", errors="replace")
    found = set(masker.leaks(text))
    found |= {name for form, name in masker.byte_forms().items() if form in data}
    return found


def _new_entries(git: Git, base: str, head: str) -> list[_Entry]:
    """Added, modified and type-changed entries: ``:old new oldsha newsha S\\0path\\0``."""
    out = git.run("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", base, head).stdout
    fields = out.split(b"\0")
    entries = []
    for meta, path in zip(fields[::2], fields[1::2], strict=False):
        parts = meta.lstrip(b":").split()
        if len(parts) == 5 and not parts[4].startswith(b"D"):
            entries.append(_Entry(path=path, mode=parts[1], blob=parts[3]))
    return entries


def _scan_objects(git: Git, ids: list[bytes], masker: Redactor) -> dict[int, dict[str, int | None]]:
    """Per index into ``ids``: the secrets found in that object, with the line of the
    first hit in a text blob (None in binary data or a commit)."""
    finder = _finder(masker)
    longest = max(map(len, masker.byte_forms()))
    process = git.stream("cat-file", "--batch")
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def feed() -> None:  # a thread, so a long list never blocks against git's output
        try:
            stdin.write(b"".join(object_id + b"\n" for object_id in ids))
            stdin.close()
        except OSError:
            pass  # git died; the reader reports it

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    timer = threading.Timer(GIT_TIMEOUT, process.kill)
    timer.start()
    found: dict[int, dict[str, int | None]] = {}
    try:
        for index in range(len(ids)):
            header = stdout.readline().split()
            if len(header) != 3:
                if header[-1:] == [b"missing"]:
                    continue
                raise GitError("git cat-file stopped while capataz searched for secrets")
            hits = _scan_blob(stdout.read, int(header[2]), finder, longest, header[1] == b"blob")
            stdout.read(1)  # the newline after each object
            if hits:
                found[index] = hits
    finally:
        timer.cancel()
        process.kill()
        process.wait()
        writer.join()
    return found


Finder = Callable[[bytes, set[str]], dict[str, int]]


def _scan_blob(
    read: Callable[[int], bytes], size: int, finder: Finder, longest: int, blob: bool
) -> dict[str, int | None]:
    """Read ``size`` bytes a piece at a time and search each piece plus the end of the
    one before it. Returns secret name -> line of the first hit (None when binary)."""
    hits: dict[str, int] = {}
    overlap, newlines = b"", 0  # newlines: line feeds before ``overlap``
    binary: bool | None = None if blob else True
    remaining = size
    while remaining:
        piece = read(min(_CHUNK, remaining))
        if not piece:
            raise GitError("git cat-file ended early while capataz searched for secrets")
        remaining -= len(piece)
        if binary is None:
            binary = b"\0" in piece[:_SNIFF]
        window = overlap + piece
        for name, offset in finder(window, set(hits)).items():
            hits[name] = newlines + window.count(b"\n", 0, offset) + 1
        keep = min(len(window), longest - 1)
        newlines += window.count(b"\n", 0, len(window) - keep)
        overlap = window[len(window) - keep :]
    return {name: None if binary else line for name, line in hits.items()}


@functools.lru_cache(maxsize=4)
def _finder(masker: Redactor) -> Finder:
    """Name -> offset of the first hit of each secret not in ``skip``: one
    ``bytes.find`` per form (C speed) for a few secrets, one regex for many."""
    forms = sorted(masker.byte_forms().items(), key=lambda item: -len(item[0]))
    if len(forms) <= _FIND_FORMS:

        def find(window: bytes, skip: set[str]) -> dict[str, int]:
            hits: dict[str, int] = {}
            for form, name in forms:
                if name in skip:
                    continue
                offset = window.find(form)
                if offset >= 0 and offset < hits.get(name, len(window)):
                    hits[name] = offset
            return hits

        return find
    names = dict(forms)
    pattern = re.compile(b"|".join(re.escape(form) for form, _ in forms))

    def search(window: bytes, skip: set[str]) -> dict[str, int]:
        hits: dict[str, int] = {}
        for match in pattern.finditer(window):
            hits.setdefault(names[match.group(0)], match.start())
        return {name: offset for name, offset in hits.items() if name not in skip}

    return search
