"""The out-of-scope check's matching rules (capataz.gates.scope), as docs/prd.md
states them: path-like code spans against changed files, other code spans as whole
words in added lines, an item's plain text in the criterion's own text."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.gates.scope import item_patterns, out_of_scope_violations
from capataz.models import ChangeKind, FileChange, Severity, ViolationType
from capataz.workspace.changes import ChangeSet, FileDiff


def changes(**added: list[str]) -> ChangeSet:
    files = tuple(
        FileDiff(
            FileChange(path=path.replace("__", "/").replace("_dot_", "."), kind=ChangeKind.ADDED),
            tuple(enumerate(lines, start=1)),
        )
        for path, lines in added.items()
    )
    return ChangeSet(root=Path("/nonexistent"), files=files)


def found(
    items: list[str], criterion: str = "", change: ChangeSet | None = None
) -> list[tuple[str | None, int | None, str]]:
    violations = out_of_scope_violations(
        items, source="docs/prd/x.md", criterion=criterion, changes=change, severity=Severity.LOW
    )
    assert all(v.type is ViolationType.OUT_OF_SCOPE and v.gate == "scope" for v in violations)
    return [(v.file, v.line, v.details) for v in violations]


@pytest.mark.parametrize(
    ("item", "paths", "words"),
    [
        ("Touching `vendor/`", ["vendor/"], []),
        ("Lock files (`**/*.lock`, `setup.py`)", ["**/*.lock", "setup.py"], []),
        ("The `legacy_api` module or ``rate_limit()``", [], ["legacy_api", "rate_limit()"]),
        ("No code here", [], []),
    ],
)
def test_code_spans_are_the_patterns(item: str, paths: list[str], words: list[str]) -> None:
    assert item_patterns(item) == (paths, words)


def test_paths_match_as_forbidden_paths_do() -> None:
    change = changes(vendor__lib_dot_py=["x"], app__poetry_dot_lock=["x"], vendored_dot_py=["x"])
    hits = found(["Touching `vendor/`", "Lock files `**/*.lock`"], change=change)
    assert [(file, line) for file, line, _ in hits] == [
        ("vendor/lib.py", None),
        ("app/poetry.lock", None),
    ]
    assert "'Touching `vendor/`'" in hits[0][2] and "docs/prd/x.md" in hits[0][2]


def test_words_match_whole_words_of_added_lines_once_per_file() -> None:
    change = changes(
        a_dot_py=["x = 1", "import legacy_api", "legacy_api.go()"],
        b_dot_py=["import legacy_api_v2"],
    )
    assert [(f, n) for f, n, _ in found(["The `legacy_api` module"], change=change)] == [
        ("a.py", 2)
    ]


def test_the_criterion_text_matches_the_plain_text_without_case_or_accents() -> None:
    items = ["Modo oscuro", "CAPTCHAs.", "`vendor/` changes"]
    hits = found(items, criterion="Mail it\n- [ ] add a MODO OSCURO toggle\nno captchas")
    assert [details for _, _, details in hits] == [
        "the criterion itself asks for 'Modo oscuro', which docs/prd/x.md lists as out of scope",
        "the criterion itself asks for 'CAPTCHAs.', which docs/prd/x.md lists as out of scope",
    ]
    assert found(["Dark mode"], criterion="darkmodes") == []  # whole words only
    assert found(["Módo"], criterion="modo") != []  # accents do not matter
