"""run.log: every line an agent or gate printed, time-stamped and labelled by source."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from capataz.redaction import redact
from capataz.sandbox.base import OutputLine
from capataz.statedir import private_file
from capataz.visible import visible

__all__ = ["RunLog"]


class RunLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = private_file(path).open("a", encoding="utf-8")

    def write(self, source: str, line: OutputLine) -> None:
        stamp = line.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        # Control characters escaped (C0, DEL, C1): a carriage return or an ANSI
        # sequence must not let an agent overwrite or fake lines when someone `cat`s
        # the log. Lines from the sandbox arrive escaped already; notes may not.
        text = visible(redact(line.text))
        self._handle.write(f"{stamp} [{source}:{line.stream}] {text}\n")
        self._handle.flush()

    def note(self, source: str, text: str) -> None:
        from capataz.models import utcnow

        self.write(source, OutputLine(at=utcnow(), stream="capataz", text=text))

    def close(self) -> None:
        self._handle.close()
