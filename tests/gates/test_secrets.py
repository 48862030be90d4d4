"""The SECRET_LEAK gate on real commits: every byte that would land is searched, in
every encoding an agent could use to slip a vault value past a plain-text search."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.conftest import git

from capataz import redaction
from capataz.gates.secrets import secret_leak_violations
from capataz.models import Severity, ViolationType
from capataz.workspace.git import Git

SECRET = "sk-live-7Hq2Lr9TzW4xN8pV3mK6bY1cF5"
RAW = SECRET.encode()


@pytest.fixture(autouse=True)
def _vault() -> Iterator[None]:
    redaction.install(lambda: {"API_KEY": SECRET})
    yield
    redaction.install(None)


def _commit(repo: Path, files: dict[str, bytes], message: str = "agent work") -> str:
    for name, data in files.items():
        (repo / name).write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def _leaks(repo: Path, base: str, head: str) -> list[tuple[str | None, int | None, str]]:
    found = secret_leak_violations(Git(repo / ".git", repo), base, head)
    assert all(v.type is ViolationType.SECRET_LEAK for v in found)
    assert all(v.severity is Severity.CRITICAL for v in found)
    assert all(SECRET not in v.model_dump_json() for v in found)  # never the value
    return [(v.file, v.line, v.details) for v in found]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01binary\xff" + RAW + b"\x00tail",
        base64.b32encode(RAW),
        base64.b32encode(b"xyz" + RAW).lower(),
        SECRET.encode("utf-16-le"),
        "\ufeffkey = ".encode("utf-16-be") + SECRET.encode("utf-16-be"),
        binascii.hexlify(RAW).upper(),
        base64.b64encode(b"a" + RAW),  # offset 1
        base64.urlsafe_b64encode(b"ab" + RAW),  # offset 2
        quote(SECRET, safe="").encode(),
    ],
    ids=["binary", "b32", "b32-lower", "utf16le", "utf16be", "hex", "b64+1", "b64url+2", "url"],
)
def test_a_secret_in_any_encoding_or_binary_file_is_found(
    make_repo: Callable[..., Path], data: bytes
) -> None:
    repo = make_repo()
    base = git(repo, "rev-parse", "HEAD")
    head = _commit(repo, {"blob.dat": b"header\n" + data})
    [(file, _, details)] = _leaks(repo, base, head)
    assert file == "blob.dat"
    assert details == "the file's content holds the value of secret API_KEY"


def test_the_line_of_a_text_hit_is_named(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    base = git(repo, "rev-parse", "HEAD")
    head = _commit(repo, {"settings.py": b"a = 1\nb = 2\nKEY = '" + RAW + b"'\n"})
    assert _leaks(repo, base, head) == [
        ("settings.py", 3, "the file's content holds the value of secret API_KEY")
    ]


def test_a_file_name_a_symlink_target_and_the_message_are_searched(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    base = git(repo, "rev-parse", "HEAD")
    (repo / "link").symlink_to(f"/tmp/{SECRET}")
    head = _commit(repo, {f"note-{SECRET}.txt": b"harmless\n"}, message=f"use {SECRET}")
    assert sorted(_leaks(repo, base, head), key=str) == sorted(
        [
            ("note-***API_KEY***.txt", None, "the file name holds the value of secret API_KEY"),
            ("link", None, "the symlink's target holds the value of secret API_KEY"),
            (
                None,
                None,
                "the commit message (the task's title or instruction) holds the value of API_KEY",
            ),
        ],
        key=str,
    )


def test_a_secret_across_the_seam_of_two_pieces_of_a_huge_file_is_found(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    base = git(repo, "rev-parse", "HEAD")
    seam = 1024 * 1024 - 10  # the scanner reads 1 MiB at a time
    data = os.urandom(seam).replace(b"\n", b"x") + RAW + os.urandom(2 * 1024 * 1024)
    head = _commit(repo, {"big.bin": data})
    assert [file for file, _, _ in _leaks(repo, base, head)] == ["big.bin"]


def test_clean_results_and_an_empty_vault_find_nothing(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    base = git(repo, "rev-parse", "HEAD")
    head = _commit(repo, {"ok.txt": b"nothing to see\n", "img.bin": os.urandom(4096)})
    assert _leaks(repo, base, head) == []
    leaky = _commit(repo, {"k.txt": RAW})
    redaction.install(None)
    assert _leaks(repo, base, leaky) == []  # nothing to look for: no git process at all
