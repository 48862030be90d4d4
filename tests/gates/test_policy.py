"""The policy gate end to end: a ChangeSet in, the violations a user would see out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from capataz.config import PolicyConfig, parse_config
from capataz.gates.policy import check_policy, redact
from capataz.models import (
    ChangeKind,
    FileChange,
    GatePhase,
    Severity,
    Violation,
    ViolationType,
)
from capataz.workspace.changes import ChangeSet, FileDiff

T = ViolationType
SECRET = "sk_live_9f8e7d6c5b4a3f2e1d0c"


def write(
    root: Path,
    path: str,
    content: str | bytes | None,
    kind: ChangeKind = ChangeKind.MODIFIED,
    added: Iterable[int] | None = None,
    removed: int = 0,
    binary: bool = False,
) -> FileDiff:
    """Write the new content under ``root`` and describe the change as a diff reader would.

    ``added`` are the line numbers the agent added; all of them for a new file. The added
    text is the file's line split on LF, so a CRLF line keeps its trailing CR."""
    data = content.encode() if isinstance(content, str) else content
    lines: list[str] = []
    if data is not None:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        lines = data.decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
    if added is None:
        added = range(1, len(lines) + 1) if kind is ChangeKind.ADDED else ()
    texts = tuple((n, lines[n - 1]) for n in added)
    return FileDiff(change=_change(path, kind, len(texts), removed, binary), added=texts)


def _change(path: str, kind: ChangeKind, added: int, removed: int, binary: bool) -> FileChange:
    return FileChange(path=path, kind=kind, lines_added=added, lines_removed=removed, binary=binary)


def changeset(root: Path, *files: FileDiff) -> ChangeSet:
    return ChangeSet(root=root, files=files)


def summary(violations: list[Violation]) -> list[tuple[ViolationType, str | None, int | None]]:
    return [(v.type, v.file, v.line) for v in violations]


POLICY = PolicyConfig(
    forbidden_paths=["legacy/**", "**/*.pem"],
    forbidden_imports=["legacy", "@corp/old"],
    forbidden_tokens=[r"sk_live_[0-9a-z]{16,}", r"(?i)secret_key\s*=\s*['\"][^'\"]{12,}"],
)


def test_a_clean_change_yields_nothing(tmp_path: Path) -> None:
    changes = changeset(
        tmp_path,
        write(tmp_path, "src/app.py", "import os\n\nprint(os.getcwd())\n", ChangeKind.ADDED),
        write(tmp_path, "web/app.ts", "import x from 'react'\nx()\n", added=[2]),
        write(tmp_path, "docs/old.md", None, ChangeKind.DELETED, removed=3),
    )
    assert check_policy(changes, POLICY) == []


def test_empty_policy_and_empty_change(tmp_path: Path) -> None:
    assert check_policy(changeset(tmp_path), PolicyConfig()) == []
    diff = write(tmp_path, "legacy/a.py", "import legacy\n", ChangeKind.ADDED)
    assert check_policy(changeset(tmp_path, diff), PolicyConfig()) == []


@pytest.mark.parametrize("kind", [ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED])
@pytest.mark.parametrize(
    ("path", "glob"),
    [
        ("legacy/db.py", "legacy/**"),
        ("legacy/a/b/c.txt", "legacy/**"),
        ("key.pem", "**/*.pem"),
        ("deploy/certs/key.pem", "**/*.pem"),
    ],
)
def test_forbidden_path_any_change_kind(
    tmp_path: Path, kind: ChangeKind, path: str, glob: str
) -> None:
    content = None if kind is ChangeKind.DELETED else "x\n"
    diff = write(tmp_path, path, content, kind, added=[] if content is None else None)
    (violation,) = check_policy(changeset(tmp_path, diff), POLICY)
    assert (violation.type, violation.file, violation.line) == (T.FORBIDDEN_PATH, path, None)
    assert violation.severity is Severity.CRITICAL
    assert repr(glob) in violation.details and kind.value in violation.details
    assert violation.suggestion
    assert (violation.gate, violation.phase) == ("policy", GatePhase.POST)


@pytest.mark.parametrize(
    ("path", "content", "added", "expected_line"),
    [
        ("src/a.py", "import os\nimport legacy.db\n", [2], 2),
        ("src/a.py", "import os\n\nfrom legacy import models\n", [3], 3),
        # a name added inside an existing multi-line import: reported at the `from` line
        ("src/a.py", "from legacy import (\n    a,\n    b,\n)\n", [3], 1),
        ("src/a.py", "def broken(:\n    pass\nimport legacy\n", [3], 3),
        ("web/a.ts", "import x from 'react'\nimport y from 'legacy/y'\n", [2], 2),
        ("web/a.tsx", "import {\n  a,\n  b\n} from '@corp/old'\n", [1, 2, 3, 4], 1),
        ("web/a.js", "const z = require('@corp/old/deep')\n", [1], 1),
        ("web/a.mjs", "const z = await import('legacy')\n", [1], 1),
    ],
)
def test_forbidden_import_on_an_added_line(
    tmp_path: Path, path: str, content: str, added: list[int], expected_line: int
) -> None:
    diff = write(tmp_path, path, content, added=added)
    (violation,) = check_policy(changeset(tmp_path, diff), POLICY)
    assert (violation.type, violation.file, violation.line) == (
        T.FORBIDDEN_IMPORT,
        path,
        expected_line,
    )
    assert violation.severity is Severity.CRITICAL
    assert "forbidden_imports" in violation.details


@pytest.mark.parametrize(
    ("path", "content", "added"),
    [
        # pre-existing import on an untouched line: not the agent's doing
        ("src/a.py", "import legacy\n\nx = 1\n", [3]),
        ("web/a.ts", "import {\n  a\n} from 'legacy'\nconst y = 2\n", [4]),
        # look-alikes
        ("src/a.py", "import legacy_tools\n", [1]),
        ("src/a.py", "from .legacy import x\n", [1]),
        ("src/a.py", "s = 'import legacy'\n", [1]),
        ("web/a.js", "// import x from 'legacy'\n", [1]),
        ("web/a.js", "import x from './legacy'\n", [1]),
        # not a source file
        ("notes.md", "import legacy\n", [1]),
    ],
)
def test_no_forbidden_import(tmp_path: Path, path: str, content: str, added: list[int]) -> None:
    diff = write(tmp_path, path, content, added=added)
    assert check_policy(changeset(tmp_path, diff), POLICY) == []


def test_forbidden_import_seen_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    diff = FileDiff(
        change=_change("src/gone.py", ChangeKind.MODIFIED, 1, 0, False),
        added=((7, "import legacy"),),
    )
    assert summary(check_policy(changeset(tmp_path, diff), POLICY)) == [
        (T.FORBIDDEN_IMPORT, "src/gone.py", 7)
    ]


def test_forbidden_token_names_file_line_and_pattern_without_echoing_it(tmp_path: Path) -> None:
    content = f"a = 1\nKEY = '{SECRET}'\n"
    diff = write(tmp_path, "src/settings.py", content, added=[2])
    (violation,) = check_policy(changeset(tmp_path, diff), POLICY)
    assert (violation.type, violation.file, violation.line) == (
        T.FORBIDDEN_TOKEN,
        "src/settings.py",
        2,
    )
    assert violation.severity is Severity.HIGH
    assert "sk_live_[0-9a-z]{16,}" in violation.details
    assert SECRET not in violation.details + violation.suggestion
    assert SECRET[5:] not in violation.details
    assert "sk_l…" in violation.details


@pytest.mark.parametrize(
    ("content", "added", "removed"),
    [
        ("a = 1\n", [1], 1),  # the secret was on the removed line
        (f"KEY = '{SECRET}'\nb = 2\n", [2], 0),  # pre-existing, untouched
        ("a = 1\n", [1], 0),
    ],
)
def test_token_only_fires_on_added_lines(
    tmp_path: Path, content: str, added: list[int], removed: int
) -> None:
    diff = write(tmp_path, "src/settings.py", content, added=added, removed=removed)
    assert check_policy(changeset(tmp_path, diff), POLICY) == []


def test_one_token_violation_per_line_and_pattern(tmp_path: Path) -> None:
    content = f"x = '{SECRET}'\nsecret_key = 'abcdefghijklmnop'\ny = '{SECRET}'\n"
    diff = write(tmp_path, "a.txt", content, ChangeKind.ADDED)
    assert summary(check_policy(changeset(tmp_path, diff), POLICY)) == [
        (T.FORBIDDEN_TOKEN, "a.txt", 1),
        (T.FORBIDDEN_TOKEN, "a.txt", 2),
        (T.FORBIDDEN_TOKEN, "a.txt", 3),
    ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (SECRET, "sk_l…"),
        ("abcdef", "abc…"),
        ("abcd", "ab…"),
        ("a", "…"),
        ("", "…"),
        ("\x1b[31mxx", "?[3…"),
    ],
)
def test_redact_never_shows_a_match_whole(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    ("policy", "files", "lines_each", "expected"),
    [
        (PolicyConfig(max_changed_files=2), 2, 10, []),
        (PolicyConfig(max_changed_files=2), 3, 1, [T.TOO_MANY_FILES]),
        (PolicyConfig(max_changed_lines=30), 3, 10, []),
        (PolicyConfig(max_changed_lines=30), 3, 11, [T.TOO_MANY_LINES]),
        (
            PolicyConfig(max_changed_files=1, max_changed_lines=5),
            2,
            3,
            [T.TOO_MANY_FILES, T.TOO_MANY_LINES],
        ),
    ],
)
def test_size_limits(
    tmp_path: Path,
    policy: PolicyConfig,
    files: int,
    lines_each: int,
    expected: list[ViolationType],
) -> None:
    diffs = [
        write(tmp_path, f"f{i}.txt", "x\n" * lines_each, ChangeKind.ADDED) for i in range(files)
    ]
    found = check_policy(changeset(tmp_path, *diffs), policy)
    assert [v.type for v in found] == expected
    assert all(v.severity is Severity.MEDIUM and v.file is None for v in found)
    if found:
        assert "split the task" in found[0].suggestion


def test_size_limits_count_removed_lines(tmp_path: Path) -> None:
    diff = write(tmp_path, "gone.txt", None, ChangeKind.DELETED, removed=50)
    (violation,) = check_policy(changeset(tmp_path, diff), PolicyConfig(max_changed_lines=10))
    assert violation.type is T.TOO_MANY_LINES and "50 lines" in violation.details


@pytest.mark.parametrize(
    ("content", "kind", "binary", "expected"),
    [
        ("héllo\n".encode(), ChangeKind.ADDED, False, []),
        (b"ok\nlatin-1: caf\xe9\n", ChangeKind.ADDED, False, [(T.ENCODING, "f.txt", 2)]),
        (b"ok\ncaf\xe9\n", ChangeKind.MODIFIED, False, [(T.ENCODING, "f.txt", 2)]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff", ChangeKind.ADDED, False, []),  # NUL: binary
        (b"\xff\xfe\xfd", ChangeKind.ADDED, True, []),  # diff says binary
    ],
)
def test_encoding(
    tmp_path: Path,
    content: bytes,
    kind: ChangeKind,
    binary: bool,
    expected: list[tuple[ViolationType, str, int]],
) -> None:
    diff = write(tmp_path, "f.txt", content, kind, added=[1], binary=binary)
    found = check_policy(changeset(tmp_path, diff), PolicyConfig())
    assert summary(found) == expected
    assert all(v.severity is Severity.LOW for v in found)


@pytest.mark.parametrize(
    ("content", "kind", "added", "expected"),
    [
        (b"a\r\nb\r\n", ChangeKind.ADDED, None, [(T.LINE_ENDINGS, "f.txt", 1)]),
        (b"a\nb\n", ChangeKind.ADDED, None, []),
        # LF file, two added CRLF lines: one violation at the first
        (b"a\nb\r\nc\nd\r\n", ChangeKind.MODIFIED, [2, 4], [(T.LINE_ENDINGS, "f.txt", 2)]),
        # a CRLF file that stays CRLF is consistent
        (b"a\r\nb\r\nc\r\n", ChangeKind.MODIFIED, [2], []),
        # LF added to an LF file
        (b"a\nb\n", ChangeKind.MODIFIED, [2], []),
        # CRLF already there on an untouched line is not the agent's doing
        (b"a\r\nb\n", ChangeKind.MODIFIED, [2], []),
    ],
)
def test_line_endings(
    tmp_path: Path,
    content: bytes,
    kind: ChangeKind,
    added: list[int] | None,
    expected: list[tuple[ViolationType, str, int]],
) -> None:
    diff = write(tmp_path, "f.txt", content, kind, added=added)
    assert summary(check_policy(changeset(tmp_path, diff), PolicyConfig())) == expected


def test_line_endings_detected_from_the_file_when_the_diff_lost_the_cr(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"a\nb\r\nc\n")
    diff = FileDiff(change=_change("f.txt", ChangeKind.MODIFIED, 1, 0, False), added=((2, "b"),))
    assert summary(check_policy(changeset(tmp_path, diff), PolicyConfig())) == [
        (T.LINE_ENDINGS, "f.txt", 2)
    ]


def test_check_encoding_false_disables_encoding_and_line_endings(tmp_path: Path) -> None:
    diff = write(tmp_path, "f.txt", b"caf\xe9\r\n", ChangeKind.ADDED)
    assert check_policy(changeset(tmp_path, diff), PolicyConfig(check_encoding=False)) == []


def test_severities_overridden_through_capataz_toml(tmp_path: Path) -> None:
    config = parse_config(
        """
[policy]
forbidden_paths = ["legacy/**"]
forbidden_imports = ["legacy"]
max_changed_files = 1

[policy.severity]
FORBIDDEN_IMPORT = "low"
FORBIDDEN_PATH = "medium"
TOO_MANY_FILES = "critical"
"""
    )
    changes = changeset(
        tmp_path,
        write(tmp_path, "legacy/x.txt", "x\n", ChangeKind.ADDED),
        write(tmp_path, "src/a.py", "import legacy\n", ChangeKind.ADDED),
    )
    found = {v.type: v.severity for v in check_policy(changes, config.policy)}
    assert found == {
        T.FORBIDDEN_IMPORT: Severity.LOW,
        T.FORBIDDEN_PATH: Severity.MEDIUM,
        T.TOO_MANY_FILES: Severity.CRITICAL,
    }


def test_results_are_sorted_by_file_line_type(tmp_path: Path) -> None:
    changes = changeset(
        tmp_path,
        write(tmp_path, "z.py", f"import legacy\nk = '{SECRET}'\n", ChangeKind.ADDED),
        write(tmp_path, "legacy/b.py", f"import legacy  # {SECRET}\n", ChangeKind.ADDED),
        write(tmp_path, "a.py", "import os\n", ChangeKind.ADDED),
    )
    policy = POLICY.model_copy(update={"max_changed_files": 1})
    found = check_policy(changes, policy)
    assert summary(found) == [
        (T.TOO_MANY_FILES, None, None),
        (T.FORBIDDEN_PATH, "legacy/b.py", None),
        (T.FORBIDDEN_IMPORT, "legacy/b.py", 1),
        (T.FORBIDDEN_TOKEN, "legacy/b.py", 1),
        (T.FORBIDDEN_IMPORT, "z.py", 1),
        (T.FORBIDDEN_TOKEN, "z.py", 2),
    ]
    assert check_policy(changeset(tmp_path, *reversed(changes.files)), policy) == found
