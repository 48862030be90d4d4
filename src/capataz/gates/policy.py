"""The built-in policy gate: rules from ``[policy]`` checked against the agent's diff.

It runs in-process, in milliseconds, with no sandbox: it only reads the diff and the
result's bytes. Rules judge what the agent *did*, so everything except the path rule
looks at added lines only: an import or a token that was already there, or that the
agent removed, is not the agent's doing and must not block its work.

Every violation names the file and line when there is one, says what matched in
``details`` and what to do in ``suggestion``, because a human (or the agent, on a retry)
reads it without the config at hand. Matched tokens may be secrets and are never echoed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from capataz.config import PolicyConfig
from capataz.gates.imports import find_imports, forbidden_entry, language_of
from capataz.gates.paths import match_any, normalize_path
from capataz.models import ChangeKind, GatePhase, Violation, ViolationType
from capataz.workspace.changes import ChangeSet, FileDiff

__all__ = ["GATE_NAME", "check_policy", "redact"]

GATE_NAME = "policy"
_BINARY_SNIFF = 8192  # bytes inspected for a NUL, as git does
_PREVIEW = 4  # characters of a matched token shown at most


def check_policy(changes: ChangeSet, policy: PolicyConfig) -> list[Violation]:
    """All policy violations of ``changes``, sorted by file, line, type (stable for reports)."""
    tokens = [re.compile(pattern) for pattern in policy.forbidden_tokens]
    found: list[Violation] = [*_size_violations(changes, policy)]
    for diff in changes.files:
        found.extend(_path_violations(diff, policy))
        if diff.change.kind is ChangeKind.DELETED:
            continue
        found.extend(_link_violations(diff, changes, policy))
        content = changes.read(diff.path) if _needs_content(diff, policy) else None
        found.extend(_import_violations(diff, content, policy))
        found.extend(_token_violations(diff, _scanned_lines(diff, changes), tokens, policy))
        if policy.check_encoding and not _is_binary(diff, content):
            found.extend(_encoding_violations(diff, content, policy))
            found.extend(_line_ending_violations(diff, content, policy))
    return sorted(found, key=_order)


def _needs_content(diff: FileDiff, policy: PolicyConfig) -> bool:
    """Read the file only when a rule needs more than the diff (keeps big trees cheap)."""
    imports = bool(policy.forbidden_imports and diff.added and language_of(diff.path))
    return imports or policy.check_encoding


def redact(text: str) -> str:
    """At most the first four characters of ``text`` and an ellipsis.

    Short matches show at most half their length, so no match is ever shown whole."""
    shown = text[: min(_PREVIEW, len(text) // 2)]
    return "".join(ch if ch.isprintable() else "?" for ch in shown) + "…"


def _order(violation: Violation) -> tuple[str, int, str, str]:
    return (violation.file or "", violation.line or 0, violation.type.value, violation.details)


def _violation(
    policy: PolicyConfig,
    kind: ViolationType,
    details: str,
    suggestion: str,
    *,
    file: str | None = None,
    line: int | None = None,
) -> Violation:
    return Violation(
        type=kind,
        severity=policy.severity_of(kind),
        details=details,
        suggestion=suggestion,
        file=file,
        line=line,
        gate=GATE_NAME,
        phase=GatePhase.POST,
    )


# --------------------------------------------------------------------------- size


def _size_violations(changes: ChangeSet, policy: PolicyConfig) -> Iterator[Violation]:
    files, lines = len(changes.files), changes.lines_changed
    if policy.max_changed_files is not None and files > policy.max_changed_files:
        yield _violation(
            policy,
            ViolationType.TOO_MANY_FILES,
            f"{files} files changed; [policy].max_changed_files allows {policy.max_changed_files}",
            "split the task into smaller tasks, or raise [policy].max_changed_files "
            "if a change this wide is expected",
        )
    if policy.max_changed_lines is not None and lines > policy.max_changed_lines:
        yield _violation(
            policy,
            ViolationType.TOO_MANY_LINES,
            f"{lines} lines changed (added plus removed); [policy].max_changed_lines allows "
            f"{policy.max_changed_lines}",
            "split the task into smaller tasks, or raise [policy].max_changed_lines "
            "if a change this large is expected",
        )


# --------------------------------------------------------------------------- paths


def _path_violations(diff: FileDiff, policy: PolicyConfig) -> Iterator[Violation]:
    glob = match_any(diff.path, policy.forbidden_paths)
    if glob is None:
        return
    yield _violation(
        policy,
        ViolationType.FORBIDDEN_PATH,
        f"{diff.path} was {diff.change.kind.value}, but it matches the forbidden path "
        f"pattern {glob!r} in [policy].forbidden_paths",
        f"leave files matching {glob!r} untouched and restore {diff.path}; if the change "
        "is intended, a human must make it",
        file=diff.path,
    )


# --------------------------------------------------------------------------- links

# A symlink that lands is followed by every tool that later reads the checkout (builds,
# editors, CI): one pointing at /etc, $HOME or up out of the repository turns "a file
# in the repo" into a host file; one into .git reaches the repository's own config and
# hooks. A .gitmodules makes a later `git submodule update` (or a recursive clone)
# fetch and check out whatever URL and path the agent chose.


def _link_violations(
    diff: FileDiff, changes: ChangeSet, policy: PolicyConfig
) -> Iterator[Violation]:
    if normalize_path(diff.path) == ".gitmodules":
        yield _violation(
            policy,
            ViolationType.SUBMODULE_CONFIG,
            f".gitmodules was {diff.change.kind.value}: submodules fetch and check out code "
            "from wherever it points",
            "vendor the code or add the submodule by hand; an agent may not declare submodules",
            file=diff.path,
        )
    link = changes.root / diff.path
    if not link.is_symlink():
        return
    target = str(link.readlink())
    if not _escapes(diff.path, target, changes.root):
        return
    yield _violation(
        policy,
        ViolationType.SYMLINK_ESCAPE,
        f"{diff.path} is a symlink to {target!r}, outside the workspace"
        + ("" if Path(target).is_absolute() else " (or into .git)"),
        f"replace {diff.path} with a copy of what it should contain, or a link inside "
        "the repository",
        file=diff.path,
    )


def _escapes(path: str, target: str, root: Path) -> bool:
    """Whether ``target`` (a link at ``path``) leaves the tree or enters ``.git``: read
    as written (absolute, or ``..`` climbing past the root) and as resolved through the
    other links in the tree, so a chain of innocent-looking links cannot escape."""
    if Path(target).is_absolute():
        return True
    parts: list[str] = normalize_path(path).split("/")[:-1]
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return True
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if parts[:1] == [".git"]:
        return True
    resolved = Path(os.path.realpath(root / path))
    top = Path(os.path.realpath(root))
    return not resolved.is_relative_to(top) or resolved.relative_to(top).parts[:1] == (".git",)


# --------------------------------------------------------------------------- imports


def _import_violations(
    diff: FileDiff, content: bytes | None, policy: PolicyConfig
) -> Iterator[Violation]:
    language = language_of(diff.path)
    if language is None or not policy.forbidden_imports or not diff.added:
        return
    added = {number for number, _ in diff.added}
    for ref in find_imports(diff.path, _source_text(diff, content)):
        if not ref.spans(added):
            continue  # pre-existing import on untouched lines
        entry = forbidden_entry(ref, policy.forbidden_imports, language)
        if entry is None:
            continue
        yield _violation(
            policy,
            ViolationType.FORBIDDEN_IMPORT,
            f"{diff.path}:{ref.line} imports {ref.module!r}, which [policy].forbidden_imports "
            f"forbids (entry {entry!r})",
            f"remove the import of {ref.module!r} and do without {entry!r}; "
            "this repository does not allow new code to depend on it",
            file=diff.path,
            line=ref.line,
        )


def _source_text(diff: FileDiff, content: bytes | None) -> str:
    """The new file's text; when it cannot be read, the added lines at their positions.

    The sparse fallback keeps line numbers right and, for Python, falls through to the
    line scan, so an unreadable file still has its added imports seen."""
    if content is not None:
        return content.decode("utf-8", errors="replace")
    last = max(number for number, _ in diff.added)
    lines = [""] * last
    for number, text in diff.added:
        lines[number - 1] = text
    return "\n".join(lines)


# --------------------------------------------------------------------------- tokens


def _scanned_lines(diff: FileDiff, changes: ChangeSet) -> Sequence[tuple[int, str]]:
    """The lines tokens are searched in: the added lines, or — for a file git calls binary,
    whose diff shows none — every line of its bytes, so one NUL byte cannot hide a secret."""
    if not diff.change.binary:
        return diff.added
    content = changes.read(diff.path) or b""
    text = content.decode("utf-8", errors="replace").replace("\0", " ")
    return list(enumerate(text.splitlines(), start=1))


def _token_violations(
    diff: FileDiff,
    lines: Sequence[tuple[int, str]],
    tokens: Sequence[re.Pattern[str]],
    policy: PolicyConfig,
) -> Iterator[Violation]:
    for number, text in lines:
        line = text.rstrip("\r\n")
        for pattern in tokens:
            match = _first_nonempty(pattern, line)
            if match is None:
                continue
            yield _violation(
                policy,
                ViolationType.FORBIDDEN_TOKEN,
                f"{diff.path}:{number} matches the forbidden token pattern "
                f"{pattern.pattern!r} (starting {redact(match)!r})",
                "remove the value from the code; if it is a credential, rotate it and load "
                "it from the environment or a secret store instead",
                file=diff.path,
                line=number,
            )


def _first_nonempty(pattern: re.Pattern[str], text: str) -> str | None:
    """The first non-empty match: an empty one names no text and is a pattern accident."""
    return next((m.group(0) for m in pattern.finditer(text) if m.end() > m.start()), None)


# --------------------------------------------------------------------------- encoding


def _is_binary(diff: FileDiff, content: bytes | None) -> bool:
    return diff.change.binary or (content is not None and b"\0" in content[:_BINARY_SNIFF])


def _encoding_violations(
    diff: FileDiff, content: bytes | None, policy: PolicyConfig
) -> Iterator[Violation]:
    if content is None:
        return
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        yield _violation(
            policy,
            ViolationType.ENCODING,
            f"{diff.path} is not valid UTF-8 (first invalid byte at line {line}, "
            f"byte offset {exc.start})",
            f"re-encode {diff.path} as UTF-8; if it is binary data, mark it binary in "
            ".gitattributes",
            file=diff.path,
            line=line,
        )


def _line_ending_violations(
    diff: FileDiff, content: bytes | None, policy: PolicyConfig
) -> Iterator[Violation]:
    """One violation per file: a new file with CRLF, or CRLF added lines in an LF file."""
    lines = content.split(b"\n") if content is not None else None
    if diff.change.kind is ChangeKind.ADDED and lines is not None:
        added = list(range(1, len(lines) + 1))  # every line of a new file is the agent's
    else:
        added = sorted({number for number, _ in diff.added})
    crlf = [number for number in added if _is_crlf(diff, lines, number)]
    if not crlf:
        return
    if diff.change.kind is ChangeKind.ADDED:
        details = f"{diff.path} is a new file with CRLF line endings ({len(crlf)} lines)"
    elif lines is not None and _has_lf_line(lines, set(added)):
        details = (
            f"{len(crlf)} added line(s) of {diff.path} end with CRLF (first at line "
            f"{crlf[0]}) while the rest of the file uses LF"
        )
    else:
        return  # every other line is CRLF too (or unknown): the file is consistent
    yield _violation(
        policy,
        ViolationType.LINE_ENDINGS,
        details,
        f"convert {diff.path} to LF line endings (e.g. `sed -i 's/\\r$//' {diff.path}`)",
        file=diff.path,
        line=crlf[0],
    )


def _is_crlf(diff: FileDiff, lines: list[bytes] | None, number: int) -> bool:
    """Whether added line ``number`` ends with CR; the file's bytes win over the diff text,
    which some diff readers strip of its CR."""
    if lines is not None and 0 < number < len(lines):
        return lines[number - 1].endswith(b"\r")
    return any(n == number and text.endswith("\r") for n, text in diff.added)


def _has_lf_line(lines: list[bytes], added: Iterable[int]) -> bool:
    """Whether a line the agent did not add ends with a bare LF."""
    skip = set(added)
    # The last element follows the final newline (or is an unterminated last line).
    return any(
        not line.endswith(b"\r") for number, line in enumerate(lines[:-1], 1) if number not in skip
    )
