"""What leaves the output splitter is masked and terminal-safe, however an agent
splits a secret over writes and lines, and lines without a secret are not delayed."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from capataz import redaction
from capataz.sandbox.output import LineSplitter

SECRET = "sk-live-7Hq2Lr9TzW4xN8pV3mK6bY1cF5"
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _vault() -> Iterator[None]:
    redaction.install(lambda: {"KEY": SECRET, "PEM": "-----BEGIN-----\nAbCdEfGhIj\n-----END-----"})
    yield
    redaction.install(None)


class Screen:
    """A sink that records every line as it is delivered."""

    def __init__(self, budget: int = 10**6) -> None:
        self.lines: list[str] = []
        self.splitter = LineSplitter(lambda line: self.lines.append(line.text), budget)

    def write(self, data: bytes) -> list[str]:
        """Feed ``data``; return the lines that came out because of it."""
        before = len(self.lines)
        self.splitter.feed("out", data, NOW)
        return self.lines[before:]

    def end(self) -> list[str]:
        self.splitter.finish("out", NOW)
        self.splitter.close(NOW)
        return self.lines


@pytest.mark.parametrize(
    "printed",
    [
        [SECRET[:9].encode(), SECRET[9:].encode() + b"\n"],  # two writes, one line
        [SECRET[:9].encode() + b"\n" + SECRET[9:].encode() + b"\n"],  # printf 'abc\ndef'
        [SECRET[:9].encode() + b"\r\n", SECRET[9:].encode() + b"\r\n"],
        [b"xy" + SECRET[:2].encode() + b"\n", SECRET[2:].encode() + b"\n"],  # short start
        [base64.encodebytes((SECRET * 4).encode())],  # base64 wrapped at 76 columns
        [b"-----BEGIN-----\nAbCdEfGhIj\n-----END-----\n"],  # a secret with line breaks
        [SECRET.encode("utf-16-le") + b"\n"],
        [base64.b32encode(SECRET.encode()) + b"\n"],
    ],
    ids=["writes", "newline", "crlf", "short-start", "b64-wrapped", "multiline", "utf16", "b32"],
)
def test_a_secret_split_over_writes_or_lines_never_comes_out(printed: list[bytes]) -> None:
    screen = Screen()
    for data in printed:
        screen.write(data)
    text = "\n".join(screen.end())
    assert "***KEY***" in text or "***PEM***" in text
    assert SECRET not in text.replace("\n", "")
    assert SECRET[2:] not in text.replace("\n", "")
    assert "AbCdEfGhIj" not in text


def test_lines_go_out_at_once_unless_they_end_in_the_start_of_a_secret() -> None:
    screen = Screen()
    assert screen.write(b"building...\n") == ["building..."]
    assert screen.write(b"step 2 of 9\n") == ["step 2 of 9"]
    assert screen.write(b"token " + SECRET[:12].encode() + b"\n") == []  # held back
    assert screen.write(b"unrelated\n") == ["token " + SECRET[:12], "unrelated"]
    assert screen.write(b"key " + SECRET[:12].encode() + b"\n") == []
    assert screen.end()[-1] == "key " + SECRET[:12]  # the end releases it unchanged


def test_control_sequences_come_out_escaped() -> None:
    screen = Screen()
    lines = screen.write(
        b"\x1b]52;c;aGVsbG8=\x07\x1b[2J\r\xc2\x9b1m\x7f\x08 \xe2\x9c\x93 landed on main\tok\n"
    )
    assert lines == ["\\x1b]52;c;aGVsbG8=\\x07\\x1b[2J\\x0d\\x9b1m\\x7f\\x08 ✓ landed on main\tok"]


def test_held_lines_count_against_the_budget_and_come_out_when_it_is_spent() -> None:
    screen = Screen(budget=40)
    screen.write(SECRET[:10].encode() + b"\n")
    screen.write(b"x" * 100 + b"\n")
    lines = screen.end()
    assert lines[0] == SECRET[:10]
    assert lines[-1].startswith("[capataz] output truncated")
