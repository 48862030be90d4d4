"""Glob semantics of [policy].forbidden_paths, as a user writing capataz.toml expects them."""

from __future__ import annotations

import pytest

from capataz.gates.paths import match_any, match_glob, normalize_path


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # `dir/**`: everything below the directory, at any depth, but not look-alikes
        ("legacy/**", "legacy/a.py", True),
        ("legacy/**", "legacy/deep/er/a.py", True),
        ("legacy/**", "legacy", False),
        ("legacy/**", "legacy2/a.py", False),
        ("legacy/**", "src/legacy/a.py", False),
        # `**/x`: at any depth, including the root
        ("**/*.pem", "key.pem", True),
        ("**/*.pem", "certs/key.pem", True),
        ("**/*.pem", "a/b/c/key.pem", True),
        ("**/*.pem", "key.pem.bak", False),
        ("**/*.pem", "key.PEM", False),
        # `**` in the middle: zero or more directories
        ("a/**/b.txt", "a/b.txt", True),
        ("a/**/b.txt", "a/x/y/b.txt", True),
        ("a/**/b.txt", "ab.txt", False),
        ("**", "anything/at/all", True),
        # `*` and `?` never cross `/`; patterns are anchored at the root
        ("*.pem", "key.pem", True),
        ("*.pem", "certs/key.pem", False),
        ("src/*", "src/a.py", True),
        ("src/*", "src/pkg/a.py", False),
        ("src/*.py", "src/.hidden.py", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("a?c", "abbc", False),
        ("a**b", "axxb", True),  # `**` inside a segment is just `*`
        ("a**b", "a/b", False),
        # character classes
        ("file[123].txt", "file2.txt", True),
        ("file[123].txt", "file4.txt", False),
        ("file[a-c].txt", "fileb.txt", True),
        ("file[!a-c].txt", "filed.txt", True),
        ("file[!a-c].txt", "fileb.txt", False),
        ("file[^a-c].txt", "fileb.txt", False),
        ("x[!a]y", "x/y", False),
        ("x[.-0]y", "x/y", False),  # a range spanning '/' still never matches it
        ("[]]x", "]x", True),
        ("[abc", "[abc", True),  # unclosed bracket is literal, not an error
        # literal names: the file itself, or a directory and everything under it
        ("secrets", "secrets", True),
        ("secrets", "secrets/prod/key", True),
        ("secrets", "secrets.txt", False),
        ("config/.env", "config/.env", True),
        ("build/", "build/out/x.o", True),
        ("build/", "build", False),
        # spelling variants on either side
        ("/legacy/**", "legacy/a.py", True),
        ("legacy/**", "./legacy/a.py", True),
        ("legacy//**", "legacy/a.py", True),
        (r"\*.txt", "*.txt", True),
        (r"\*.txt", "a.txt", False),
        # regex metacharacters in names are literal
        ("a+b(c).txt", "a+b(c).txt", True),
        ("a.b", "axb", False),
        ("", "anything", False),
    ],
)
def test_match_glob(pattern: str, path: str, expected: bool) -> None:
    assert match_glob(path, pattern) is expected


def test_match_any_returns_the_first_matching_pattern() -> None:
    patterns = ["docs/**", "**/*.pem", "legacy/**"]
    assert match_any("legacy/keys/a.pem", patterns) == "**/*.pem"
    assert match_any("legacy/a.py", patterns) == "legacy/**"
    assert match_any("src/a.py", patterns) is None
    assert match_any("src/a.py", []) is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("./a/b", "a/b"), ("a//b/", "a/b"), ("/a/./b", "a/b"), ("a", "a")],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal
