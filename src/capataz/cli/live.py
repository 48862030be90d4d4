"""The live view of one run and its closing summary."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from capataz.cli.console import out, shown
from capataz.models import Outcome
from capataz.pipeline.supervisor import Event, RunReport
from capataz.redaction import redact, redact_data
from capataz.units import format_bytes, format_seconds
from capataz.visible import visible, visible_json

__all__ = ["LiveView", "render_summary", "report_json", "usage_text"]

_STYLE = {
    Outcome.LANDED: "bold green",
    Outcome.BRANCH: "bold cyan",
    Outcome.NO_CHANGES: "bold",
    Outcome.BLOCKED: "bold red",
    Outcome.REJECTED: "bold red",
    Outcome.ABORTED: "bold red",
    Outcome.AWAITING_HUMAN: "bold yellow",
}


class LiveView:
    """Pipeline listener: a table of steps with spinners plus the newest output lines."""

    def __init__(self, title: str, *, interactive: bool) -> None:
        self.title = title
        self.interactive = interactive
        self.steps: dict[str, str] = {}
        self.lines: deque[Text] = deque(maxlen=10)
        self.live = Live(self._render(), console=out, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._render())
        self.live.stop()
        if not out.is_terminal:
            out.print()  # a redirected Live leaves its last frame without a newline

    def __call__(self, event: Event) -> None:
        if event.kind == "step":
            self.steps[event.name] = event.status if event.status == "started" else event.detail
        elif event.kind == "output" and event.line is not None:
            label = Text(f"{event.name:>12} ", style="dim")
            self.lines.append(label + shown(event.line.text[:200]))
        elif event.kind == "escalation" and event.status == "opened":
            self.live.stop()
            out.print(
                Panel(
                    f"[bold yellow]Escalated:[/] {escape(visible(redact(event.detail)))}\n"
                    "Answer approve / reject / modify / abort"
                    + (" here, or" if self.interactive else "")
                    + " with `capataz decide <task-id> <choice>` from another shell.",
                    title="needs a human",
                    border_style="yellow",
                )
            )
            if self.interactive:
                out.print("[bold]decision>[/] ", end="")
            return
        elif event.kind == "escalation":
            out.print(f"[yellow]escalation answered:[/] {escape(visible(redact(event.detail)))}")
            self.live.start()
        self.live.update(self._render())

    def _render(self) -> Panel:
        table = Table.grid(padding=(0, 1))
        for name, status in self.steps.items():
            if status == "started":
                icon: Any = Spinner("dots", style="cyan")
            else:
                icon = Text("✓", style="green") if status == "ok" else Text("✗", style="red")
            table.add_row(icon, Text(name))
        body = Group(table, Text(""), *self.lines) if self.lines else table
        return Panel(body, title=self.title, border_style="blue")


def render_summary(report: RunReport) -> None:
    style = _STYLE.get(report.outcome, "bold")
    head = Table.grid(padding=(0, 2))
    head.add_row("task", report.task_id)
    head.add_row("outcome", Text(report.outcome.value, style=style))
    head.add_row("decision", shown(f"{report.decision.value} — {report.reason}"))
    head.add_row("result", shown(report.message))
    if report.agent is not None:
        a = report.agent
        ended = f"exit {a.exit_code}" if a.exit_code is not None else f"killed by signal {a.signal}"
        head.add_row(
            "agent",
            f"{a.outcome.value}, {ended}, wall {format_seconds(a.wall_seconds)}, "
            f"cpu {format_seconds(a.cpu_seconds)}, peak {format_bytes(a.peak_memory_bytes)}",
        )
    if report.usage is not None:
        u = report.usage
        used = usage_text(u.tokens_in, u.tokens_out, u.cost_usd, u.model, u.turns)
        head.add_row("usage", shown(used))
    head.add_row("evidence", shown(report.progress_dir))
    parts: list[Any] = [head]
    if report.file_changes:
        files = Table(title="file changes", title_justify="left", show_edge=False)
        for column in ("path", "change", "+", "-"):
            files.add_column(column, justify="right" if column in "+-" else "left")
        for change in report.file_changes:
            files.add_row(
                shown(change.path),
                change.kind.value,
                str(change.lines_added),
                str(change.lines_removed),
            )
        parts += [Text(""), files]
    if report.violations:
        table = Table(title="violations", title_justify="left", show_edge=False)
        for column in ("severity", "type", "where", "details"):
            table.add_column(column)
        for v in report.violations:
            where = f"{v.file}:{v.line}" if v.file and v.line else (v.file or v.gate)
            table.add_row(v.severity.value, v.type.value, shown(where), shown(v.details))
        parts += [Text(""), table]
    out.print(Panel(Group(*parts), title="capataz", border_style=style.split()[-1]))


def usage_text(
    tokens_in: int | None,
    tokens_out: int | None,
    cost_usd: float | None,
    model: str | None,
    turns: int | None,
) -> str:
    """One line of what the agent reported it used, the same in ``capataz exec``'s
    summary and ``capataz run show``: ``12,345 tokens in, 678 out, $0.0123, model
    claude-sonnet-4-5, 3 turns`` (a cost or model the agent did not report is left out).
    Plain text: callers show it through ``shown`` (the model name is the agent's word)."""
    parts = [f"{tokens_in or 0:,} tokens in", f"{tokens_out or 0:,} out"]
    if cost_usd is not None:
        parts.append(f"${cost_usd:.4f}")
    if model:
        parts.append(f"model {model}")
    if turns is not None:
        parts.append(f"{turns} turn{'' if turns == 1 else 's'}")
    return ", ".join(parts)


def report_json(report: RunReport) -> str:
    data: dict[str, Any] = {
        "task_id": report.task_id,
        "outcome": report.outcome.value,
        "decision": report.decision.value,
        "reason": report.reason,
        "message": report.message,
        "base": report.base,
        "result_commit": report.result_commit,
        "landed_commit": report.landed_commit,
        "branch": report.branch,
        "file_changes": [c.model_dump(mode="json") for c in report.file_changes],
        "violations": [v.model_dump(mode="json") for v in report.violations],
        "steps": [s.model_dump(by_alias=True, mode="json") for s in report.steps],
        "progress_dir": str(report.progress_dir),
        "exit_code": report.outcome.exit_code,
    }
    if report.agent is not None:
        a = report.agent
        data["agent"] = {
            "outcome": a.outcome.value,
            "exit_code": a.exit_code,
            "signal": a.signal,
            "wall_seconds": a.wall_seconds,
            "cpu_seconds": a.cpu_seconds,
            "peak_memory_bytes": a.peak_memory_bytes,
            "output_bytes": a.output_bytes,
            "output_truncated": a.output_truncated,
            "leftover_processes": a.leftover_processes,
            "detail": a.detail,
        }
    if report.usage is not None:
        data["usage"] = dataclasses.asdict(report.usage)
    # Masked (a file name may hold a secret) and escaped (C1 and DEL too): a script
    # may print it straight to a terminal.
    return visible_json(redact_data(data))
