"""Turning two raw pipes into time-stamped lines, within the ``max_output`` budget."""

from __future__ import annotations

from datetime import datetime

from capataz.redaction import redact
from capataz.sandbox.base import OutputLine, OutputSink

__all__ = ["LineSplitter"]

_MAX_LINE = 1024 * 1024  # a longer run of bytes without a newline is delivered in pieces


class LineSplitter:
    """Splits the two pipes into lines and spends the ``max_output`` budget on them."""

    def __init__(self, sink: OutputSink, budget: int) -> None:
        self.sink = sink
        self.budget = budget
        self.total = 0
        self.delivered = 0
        self.truncated = False
        self.pending: dict[str, bytes] = {"out": b"", "err": b""}

    def feed(self, stream: str, data: bytes, at: datetime) -> None:
        self.total += len(data)
        if self.truncated:
            return  # only counted from now on: no splitting work for a flood
        *lines, rest = (self.pending[stream] + data).split(b"\n")
        self.pending[stream] = rest
        for raw in lines:
            if not self._deliver(stream, raw, 1, at):
                return
        while len(self.pending[stream]) >= _MAX_LINE:
            piece, self.pending[stream] = (
                self.pending[stream][:_MAX_LINE],
                self.pending[stream][_MAX_LINE:],
            )
            if not self._deliver(stream, piece, 0, at):
                return

    def finish(self, stream: str, at: datetime) -> None:
        rest, self.pending[stream] = self.pending[stream], b""
        if rest and not self.truncated:
            self._deliver(stream, rest, 0, at)

    def close(self, at: datetime) -> None:
        if self.truncated:
            dropped = self.total - self.delivered
            self.sink(
                OutputLine(
                    at,
                    "err",
                    f"[capataz] output truncated: {dropped} more bytes were printed after "
                    f"the first {self.delivered} (max_output is {self.budget} bytes)",
                )
            )

    def _deliver(self, stream: str, raw: bytes, newline: int, at: datetime) -> bool:
        if self.delivered + len(raw) + newline > self.budget:
            self.truncated = True
            self.pending = {"out": b"", "err": b""}
            return False
        self.delivered += len(raw) + newline
        # Masked here, at the source: the live view, the run log, the store and the
        # event stream only ever see the masked line.
        text = redact(raw.decode("utf-8", errors="replace").removesuffix("\r"))
        self.sink(OutputLine(at, stream, text))
        return True
