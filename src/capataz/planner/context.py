"""What the planner is told: the instructions, the goal, the project's own context
file, the backlog, recent directives and recent runs, in that order of importance,
trimmed to ``[planner] context_tokens``.

Tokens are estimated at :data:`CHARS_PER_TOKEN` characters each: close enough for
English and code with the common tokenizers, and it needs no tokenizer (which would
tie capataz to one model family). The instructions are never trimmed (without them the
answer cannot be read); every later section gets what the earlier ones left, is cut
at a line with a marker saying so, and is left out when nothing is left."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capataz.config import Config, PlannerConfig
from capataz.planner.errors import PlannerError
from capataz.store import Store, TaskState

__all__ = ["CHARS_PER_TOKEN", "Composed", "compose", "estimate_tokens"]

CHARS_PER_TOKEN = 4
TRIMMED = "… (trimmed to the planner's context budget)"
_LISTED = 20  # tasks, directives or runs per list: the planner needs the gist

SYSTEM = """You are the planner of capataz, a supervisor that runs coding agents on \
tasks in a queue. Propose directives: each a titled batch of tasks with the reason for \
it. Each task has a short unique `name` (local to its directive), a `title`, an \
`instruction` telling the agent exactly what to do, and `depends_on`: the names of \
tasks of the same directive that must be done first. `agent` is one of the agents \
listed below (null: the project's default). Do not repeat work that is queued or done; \
propose fixes for what failed or is blocked when it makes sense. Answer only with the \
JSON object the response format describes."""


def estimate_tokens(text: str) -> int:
    """The documented estimate: characters / :data:`CHARS_PER_TOKEN`, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Composed:
    """The chat messages for one plan, and which sections were trimmed or left out."""

    messages: list[dict[str, str]]
    trimmed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(estimate_tokens(m["content"]) for m in self.messages)


def compose(
    store: Store,
    config: Config,
    planner: PlannerConfig,
    repo_root: Path | None,
    *,
    goal: str | None = None,
    environment: str | None = None,
) -> Composed:
    """The messages for one plan over what ``store`` holds now."""
    system = f"{SYSTEM}\n\nAgents:\n{_agents(config)}"
    budget = planner.context_tokens * CHARS_PER_TOKEN - len(system)
    sections = [
        ("Goal", goal.strip() if goal and goal.strip() else _NO_GOAL),
        ("Environment", environment.strip() if environment else ""),
        ("Project context", _context_file(planner, repo_root)),
        ("Backlog", _backlog(store)),
        ("Recent directives", _directives(store)),
        ("Recent runs", _runs(store)),
    ]
    parts: list[str] = []
    trimmed: list[str] = []
    dropped: list[str] = []
    for title, text in sections:
        if not text:
            continue
        block = f"## {title}\n{text}\n"
        if len(block) <= budget:
            parts.append(block)
            budget -= len(block)
            continue
        room = budget - len(TRIMMED) - 1
        if room < len(title) + 8:
            dropped.append(title)
            continue
        cut = block[:room]
        if "\n" in cut[len(title) + 4 :]:
            cut = cut[: cut.rindex("\n") + 1]
        parts.append(f"{cut}{TRIMMED}\n")
        budget -= len(parts[-1])
        trimmed.append(title)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n".join(parts)},
    ]
    return Composed(messages, trimmed, dropped)


_NO_GOAL = "No goal was given: propose the next most useful work for this project."


def _agents(config: Config) -> str:
    default = config.project.default_agent
    return "\n".join(
        f"- {name}{' (default)' if name == default else ''}: "
        f"{agent.description or 'no description'}"
        for name, agent in sorted(config.agents.items())
    )


def _context_file(planner: PlannerConfig, repo_root: Path | None) -> str:
    if planner.context_file is None:
        return ""
    if repo_root is None:
        raise PlannerError(
            f"[planner] context_file {planner.context_file} cannot be read: no repository",
            fix="run the planner in the repository (capataz serve there)",
        )
    path = repo_root / planner.context_file
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise PlannerError(
            f"[planner] context_file {planner.context_file} cannot be read "
            f"({exc.strerror or type(exc).__name__})",
            fix="create that file, or fix or remove context_file in capataz.toml",
        ) from None


def _backlog(store: Store) -> str:
    counts: dict[str, Any] = store.metrics()["tasks"]
    lines = ["Tasks by status: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    for state in (TaskState.FAILED, TaskState.BLOCKED):
        found, total = store.tasks.page(state, limit=_LISTED)
        if found:
            lines.append(f"{state.value.capitalize()} ({total}):")
            lines += [
                f"- {t.id} {t.title!r}: {t.reason or t.last_error or 'no reason recorded'}"
                for t in found
            ]
    for state in (TaskState.RUNNING, TaskState.READY, TaskState.PENDING, TaskState.ESCALATED):
        found, total = store.tasks.page(state, limit=_LISTED)
        if found:
            lines.append(f"{state.value.capitalize()} ({total}):")
            lines += [f"- {t.id} {t.title!r}" for t in found]
    return "\n".join(lines)


def _directives(store: Store) -> str:
    return "\n".join(
        f"- [{d.status.value}] {d.title}" + (f" — {d.reason}" if d.reason else "")
        for d in store.directives.list(limit=_LISTED // 2)
    )


def _runs(store: Store) -> str:
    return "\n".join(
        f"- {r.task_title!r}: {r.status}" + (f" — {r.reason}" if r.reason else "")
        for r in store.runs.list(limit=_LISTED // 2)
    )
