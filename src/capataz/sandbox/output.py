"""Turning two raw pipes into time-stamped lines, within the ``max_output`` budget.

Every line leaves here masked (:mod:`capataz.redaction`) and with its control
characters escaped (:mod:`capataz.visible`), so the live view, the run log, the store
and the event stream only ever receive text that is safe to show.

A secret does not always arrive on one line: an agent may print half of it, a line
break, then the rest (``printf 'abc\\ndef'``, base64 wrapped at 76 columns, a PEM key).
Lines are therefore matched joined, line breaks removed. To keep the output live, a
line is held back only when its end (together with any lines already held) starts a
masked form with at least :data:`~capataz.redaction.HOLD_PREFIX` characters; it goes
out, masked, as soon as the next line shows whether the form goes on, or when the
stream ends. A shorter unfinished form is shown at once (at most three characters of
it, not the secret) but remembered, so a line that completes it is masked where it
continues. With no secret in the vault none of this runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from capataz.redaction import HOLD_PREFIX, Redactor, active
from capataz.sandbox.base import OutputLine, OutputSink
from capataz.visible import visible

__all__ = ["LineSplitter"]

_MAX_LINE = 1024 * 1024  # a longer run of bytes without a newline is delivered in pieces
_MAX_HELD = 64  # lines held back at most (a form split over more lines is absurd)


@dataclass
class _Held:
    """One stream's lines waiting for the next, and the unfinished form already shown."""

    shown: str = ""
    lines: list[tuple[datetime, str]] = field(default_factory=list)


class LineSplitter:
    """Splits the two pipes into lines and spends the ``max_output`` budget on them."""

    def __init__(self, sink: OutputSink, budget: int) -> None:
        self.sink = sink
        self.budget = budget
        self.total = 0
        self.delivered = 0
        self.truncated = False
        self.pending: dict[str, bytes] = {"out": b"", "err": b""}
        self.held: dict[str, _Held] = {"out": _Held(), "err": _Held()}
        self.progress = False  # set when the sink takes a line as progress
        self.chatter = 0  # lines the sink called chatter since the last progress

    def feed(self, stream: str, data: bytes, at: datetime) -> bool:
        """Split ``data`` into lines and deliver them. True when the chunk counts as
        progress for the idle watchdog: a line the sink did not call chatter, a line
        held back (unjudged yet), a chunk with no complete line, or anything once the
        output is truncated (no longer judged line by line)."""
        self.total += len(data)
        if self.truncated:
            return True  # only counted from now on: no splitting work for a flood
        self.progress = b"\n" not in data
        *lines, rest = (self.pending[stream] + data).split(b"\n")
        self.pending[stream] = rest
        for raw in lines:
            if not self._deliver(stream, raw, 1, at):
                return True
        while len(self.pending[stream]) >= _MAX_LINE:
            piece, self.pending[stream] = (
                self.pending[stream][:_MAX_LINE],
                self.pending[stream][_MAX_LINE:],
            )
            if not self._deliver(stream, piece, 0, at):
                return True
        return self.progress

    def _emit(self, line: OutputLine) -> None:
        if self.sink(line) is False:
            self.chatter += 1
        else:
            self.progress = True
            self.chatter = 0

    def finish(self, stream: str, at: datetime) -> None:
        rest, self.pending[stream] = self.pending[stream], b""
        if rest and not self.truncated:
            self._deliver(stream, rest, 0, at)
        self._release(stream)

    def close(self, at: datetime) -> None:
        for stream in self.held:
            self._release(stream)
        if self.truncated:
            dropped = self.total - self.delivered
            self._emit(
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
            for name in self.held:
                self._release(name)
            return False
        self.delivered += len(raw) + newline
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        masker = active()
        held = self.held[stream]
        if not masker and not held.lines:
            self._emit(OutputLine(at, stream, visible(text)))
            return True
        held.lines.append((at, text))
        joined = held.shown + "".join(line for _, line in held.lines)
        unfinished = masker.open_prefix(joined)
        if unfinished < HOLD_PREFIX or len(held.lines) >= _MAX_HELD:
            self._flush(stream, masker, joined, unfinished)
        else:
            self.progress = True  # held back, not judged yet
        return True

    def _release(self, stream: str) -> None:
        """The stream ended (or was cut): what was held goes out, masked."""
        held = self.held[stream]
        if held.lines:
            masker = active()
            self._flush(stream, masker, held.shown + "".join(t for _, t in held.lines), 0)
        held.shown = ""

    def _flush(self, stream: str, masker: Redactor, joined: str, unfinished: int) -> None:
        """Deliver the held lines, each masked wherever a form found in ``joined``
        overlaps it; remember an unfinished form at the end for the next line."""
        held = self.held[stream]
        spans = masker.spans(joined)
        offset = len(held.shown)
        for at, text in held.lines:
            masked = _mask(text, offset, spans)
            offset += len(text)
            self._emit(OutputLine(at, stream, visible(masked)))
        held.lines = []
        tail = len(joined) - unfinished
        covered = bool(spans) and spans[-1][1] > tail
        held.shown = joined[tail:] if unfinished and not covered else ""


def _mask(text: str, offset: int, spans: list[tuple[int, int, str]]) -> str:
    """``text`` (which starts at ``offset`` in the joined lines) with every part that
    a span covers replaced by the span's mask."""
    end = offset + len(text)
    pieces: list[str] = []
    done = 0
    for start, stop, name in spans:
        if stop <= offset or start >= end:
            continue
        first, last = max(start, offset) - offset, min(stop, end) - offset
        pieces += [text[done:first], f"***{name}***"]
        done = last
    return "".join(pieces) + text[done:] if pieces else text
