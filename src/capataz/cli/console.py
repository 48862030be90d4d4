"""Shared Rich consoles: people read stdout; errors and warnings go to stderr.

Both are :class:`SafeConsole`: whatever a command prints, text that came from an agent
(output, file names, reasons, titles) reaches the terminal with its control characters
escaped, and JSON is masked and escaped too. Commands still pass untrusted fields
through :func:`shown` (masked and escaped where they are built); the console is the
net under that, so a field someone forgets cannot steer the terminal."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from capataz.redaction import redact, redact_data
from capataz.visible import visible, visible_json

__all__ = ["SafeConsole", "err", "out", "shown", "table"]


def table(*columns: str, compact: bool = False) -> Table:
    """The one look of the CLI's tables: a bold header over a rule, no outer edge.
    ``compact`` also drops the padding between columns, so long task ids and a reason
    still fit in 80 columns."""
    made = Table(
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=compact,
    )
    for column in columns:
        made.add_column(column)
    return made


def shown(value: object, *, style: str = "") -> Text:
    """An untrusted value as Rich text: secrets masked, control characters escaped,
    never read as markup."""
    return Text(visible(redact(str(value))), style=style)


class SafeConsole(Console):
    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # Rich's own control segments (cursor moves of the live view) stay; every
        # piece of text has its C0/C1 controls escaped before it is written.
        safe = (
            segment
            if segment.control
            else Segment(visible(segment.text, newlines=True), *segment[1:])
            for segment in buffer
        )
        return super()._render_buffer(safe)

    def print_json(  # type: ignore[override]
        self,
        json: str | None = None,
        *,
        data: Any = None,
        indent: int | None = 2,
        **_: Any,
    ) -> None:
        """JSON as scripts read it: plain (no colour codes), secrets masked, C1 and DEL
        as ``\\u00XX`` (JSON escapes C0 itself)."""
        value = jsonlib.loads(json) if json is not None else data
        text = visible_json(redact_data(value), indent=indent)
        self.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)


out = SafeConsole()
err = SafeConsole(stderr=True)
