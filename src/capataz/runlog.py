"""run.log: every line an agent or gate printed, time-stamped and labelled by source."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from capataz.redaction import redact
from capataz.sandbox.base import OutputLine
from capataz.statedir import private_file

__all__ = ["RunLog"]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09}


def _visible(text: str) -> str:
    """Control characters escaped: a carriage return or an ANSI sequence in an agent's
    output must not let it overwrite or fake lines when someone `cat`s the log."""
    return text.translate(_CONTROL)


class RunLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = private_file(path).open("a", encoding="utf-8")

    def write(self, source: str, line: OutputLine) -> None:
        stamp = line.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        text = _visible(redact(line.text))
        self._handle.write(f"{stamp} [{source}:{line.stream}] {text}\n")
        self._handle.flush()

    def note(self, source: str, text: str) -> None:
        from capataz.models import utcnow

        self.write(source, OutputLine(at=utcnow(), stream="capataz", text=text))

    def close(self) -> None:
        self._handle.close()
