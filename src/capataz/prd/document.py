"""The PRD document: a product requirements document in markdown, whose acceptance
criteria become one task each (``capataz prd import``) and whose checklists capataz
ticks as their tasks land. Pure: text in, a model or text out.

The document is read with markdown-it's token stream rather than with regular
expressions over the text, so that what counts as a heading, a list item or a
paragraph is exactly what any markdown viewer shows (a ``### AC1`` inside a code block
is not a criterion; a checkbox continued on the next line is one item). Regular
expressions only read the text *inside* one token: an ``ACn: title`` heading, a
``[ ]``/``[x]`` marker, a ``Depends on:`` line.

Headings may be English or Spanish (``## Acceptance Criteria`` / ``## Criterios de
Aceptación``, ...). Every checkbox keeps its source line (from the token's ``map``) so
that a later step can tick it in place without re-parsing its neighbours.

Every problem is one :class:`PrdError` line naming the file and line and what to write
instead, because the person fixing it has the file open in an editor.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from capataz.errors import CapatazError

__all__ = [
    "AcceptanceCriterion",
    "ChecklistItem",
    "Prd",
    "PrdError",
    "load_prd",
    "parse_prd",
    "tick",
]

_FIX_AC = "write each criterion as '### AC1: title' under '## Acceptance Criteria'"

# Section headings (level 2), compared without case or accents.
_SECTIONS = {
    "objectives": "objectives",
    "objetivos": "objectives",
    "goals": "objectives",
    "acceptance criteria": "criteria",
    "criterios de aceptacion": "criteria",
    "out of scope": "out_of_scope",
    "fuera de alcance": "out_of_scope",
    "fuera del alcance": "out_of_scope",
    "technical notes": "technical_notes",
    "notas tecnicas": "technical_notes",
}
# "AC1: title", also with ".", "-" or an en or em dash after the id.
_AC_HEADING = re.compile(
    r"^(?P<id>AC[-_ ]?\d+)\s*(?:[:.\-\u2013\u2014]\s*(?P<title>.*))?$", re.IGNORECASE
)
_AC_ID = re.compile(r"^AC[-_ ]?(\d+)$", re.IGNORECASE)
_CHECKBOX = re.compile(r"^\[(?P<mark>[ xX])\]\s+(?P<text>.*)$", re.DOTALL)
_DEPENDS = re.compile(
    r"^(?:depends on|depende de|dependencies|dependencias)\s*:\s*(?P<ids>.*)$", re.IGNORECASE
)
_NO_DEPENDENCY = {"", "-", "none", "nothing", "ninguno", "ninguna", "nada"}
_REMARK = re.compile(r"\s*\([^)]*\)\s*$")
# The marker of an unchecked item at the start of its line, after any blockquote and
# the list bullet (``- ``, ``* ``, ``1. ``).
_UNCHECKED = re.compile(r"^(?P<lead>[ \t>]*(?:[-*+]|\d+[.)])[ \t]+)\[ \]")
_PRD_PREFIX = re.compile(r"^PRD\s*:\s*", re.IGNORECASE)


class PrdError(CapatazError):
    """A PRD cannot be read or does not have the shape capataz needs (a title,
    acceptance criteria with distinct ids, dependencies on criteria it defines). One
    line naming the file and line; the CLI exits 2, like for a bad task file."""


@dataclass(frozen=True)
class ChecklistItem:
    """One ``- [ ]`` line of a criterion. ``line`` is 1-based, where the marker is."""

    text: str
    checked: bool
    line: int


@dataclass(frozen=True)
class AcceptanceCriterion:
    """One ``### ACn: title`` section. ``depends_on`` is what the document says, or the
    criterion before it when it says nothing (criteria build on each other in order);
    ``notes`` are its other lines (paragraphs, plain list items), kept for the agent."""

    id: str
    title: str
    line: int
    items: tuple[ChecklistItem, ...]
    depends_on: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def checked(self) -> int:
        return sum(1 for item in self.items if item.checked)


@dataclass(frozen=True)
class Prd:
    """A parsed PRD. ``title`` is without its ``PRD:`` prefix."""

    path: Path
    title: str
    objectives: tuple[str, ...]
    criteria: tuple[AcceptanceCriterion, ...]
    out_of_scope: tuple[str, ...]
    technical_notes: tuple[str, ...]

    def criterion(self, ac_id: str) -> AcceptanceCriterion:
        return next(ac for ac in self.criteria if ac.id == ac_id)


def load_prd(path: Path) -> Prd:
    """Read and parse the PRD at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PrdError(
            f"{path}: cannot be read ({reason})",
            fix="check the path, its permissions and that it is UTF-8 markdown",
        ) from None
    return parse_prd(text, path=path)


def parse_prd(text: str, *, path: Path = Path("<prd>")) -> Prd:
    """Parse markdown ``text``; ``path`` is where it came from, for messages and for
    the model."""
    return _Parser(path).parse(text)


def tick(text: str, ac_ids: Sequence[str], *, path: Path = Path("<prd>")) -> str:
    """``text`` with every checklist item of the criteria ``ac_ids`` checked, and
    nothing else changed: only the ``[ ]`` on each item's own line (its ``line`` from
    the parse) becomes ``[x]``, so the rest of the file, its line endings included,
    stays byte for byte what it was."""
    prd = parse_prd(text, path=path)
    wanted = set(ac_ids)
    lines = text.split("\n")  # markdown-it's lines; a "\r" before it stays with its line
    for ac in prd.criteria:
        if ac.id not in wanted:
            continue
        for item in ac.items:
            if not item.checked:
                lines[item.line - 1] = _UNCHECKED.sub(r"\g<lead>[x]", lines[item.line - 1], 1)
    return "\n".join(lines)


@dataclass
class _Draft:
    """A criterion while its section is being read."""

    id: str
    title: str
    line: int
    items: list[ChecklistItem]
    notes: list[str]
    depends_on: list[str] | None = None
    depends_line: int = 0


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.title: str | None = None
        self.section: str | None = None
        self.criteria_line = 0
        self.lists: dict[str, list[str]] = {
            "objectives": [],
            "out_of_scope": [],
            "technical_notes": [],
        }
        self.drafts: list[_Draft] = []

    def error(self, line: int, problem: str, fix: str) -> PrdError:
        return PrdError(f"{self.path}:{line}: {problem}", fix=fix)

    def parse(self, text: str) -> Prd:
        tokens = MarkdownIt("commonmark").parse(text)
        for index, token in enumerate(tokens):
            if token.type == "heading_open":
                self._heading(token, tokens[index + 1])
            elif token.type == "inline" and tokens[index - 1].type == "paragraph_open":
                # Only an item's first paragraph can open with its checkbox.
                self._paragraph(token, item=tokens[index - 2].type == "list_item_open")
        if self.title is None:
            raise self.error(1, "no title", "start the PRD with a '# PRD: title' line")
        if not self.drafts:
            where = self.criteria_line or 1
            raise self.error(where, "no acceptance criteria", _FIX_AC)
        criteria = self._criteria()
        return Prd(
            path=self.path,
            title=self.title,
            objectives=tuple(self.lists["objectives"]),
            criteria=criteria,
            out_of_scope=tuple(self.lists["out_of_scope"]),
            technical_notes=tuple(self.lists["technical_notes"]),
        )

    def _heading(self, token: Token, inline: Token) -> None:
        line = _line(token)
        text = inline.content.strip()
        if token.tag == "h1":
            if self.title is None:
                self.title = _PRD_PREFIX.sub("", text).strip() or text
            self.section = None
        elif token.tag == "h2":
            self.section = _SECTIONS.get(_plain(text))
            if self.section == "criteria" and not self.criteria_line:
                self.criteria_line = line
        elif self.section == "criteria" and token.tag == "h3":
            self._criterion(text, line)
        # Deeper headings inside a criterion are part of its text.
        elif self.section == "criteria" and self.drafts and text:
            self.drafts[-1].notes.append(text)

    def _criterion(self, text: str, line: int) -> None:
        match = _AC_HEADING.match(text)
        if match is None or not (match["title"] or "").strip():
            raise self.error(line, f"{text!r} is not an acceptance criterion heading", _FIX_AC)
        ac_id = _normal_id(match["id"])
        for draft in self.drafts:
            if draft.id == ac_id:
                raise self.error(
                    line,
                    f"{ac_id} is used twice (first on line {draft.line})",
                    "give every criterion its own number",
                )
        self.drafts.append(_Draft(ac_id, match["title"].strip(), line, [], []))

    def _paragraph(self, token: Token, *, item: bool) -> None:
        text = " ".join(part.strip() for part in token.content.splitlines()).strip()
        if not text:
            return
        if self.section in self.lists:
            self.lists[self.section].append(text)
            return
        if self.section != "criteria" or not self.drafts:
            return  # text outside the sections capataz reads, or before the first AC
        draft = self.drafts[-1]
        checkbox = _CHECKBOX.match(text) if item else None
        if checkbox is not None:
            checked = checkbox["mark"] != " "
            draft.items.append(ChecklistItem(checkbox["text"].strip(), checked, _line(token)))
            return
        for offset, raw in enumerate(token.content.splitlines()):
            depends = _DEPENDS.match(raw.strip())
            if depends is not None:
                self._depends(draft, depends["ids"], _line(token) + offset)
                return
        draft.notes.append(text)

    def _depends(self, draft: _Draft, value: str, line: int) -> None:
        if draft.depends_on is not None:
            raise self.error(
                line,
                f"{draft.id} says what it depends on twice (first on line {draft.depends_line})",
                "list every dependency on one 'Depends on: AC1, AC2' line",
            )
        ids: list[str] = []
        for part in re.split(r"\s*(?:,|;|\band\b|\by\b)\s*", value.strip(), flags=re.I):
            if part.strip().casefold() in _NO_DEPENDENCY:
                continue
            if _AC_ID.match(part.strip()) is None:
                raise self.error(
                    line,
                    f"{part.strip()!r} is not an acceptance criterion id",
                    "write 'Depends on: AC1, AC2' (or 'Depends on: none')",
                )
            ids.append(_normal_id(part.strip()))
        draft.depends_on = list(dict.fromkeys(ids))
        draft.depends_line = line

    def _criteria(self) -> tuple[AcceptanceCriterion, ...]:
        known = {draft.id for draft in self.drafts}
        criteria: list[AcceptanceCriterion] = []
        for position, draft in enumerate(self.drafts):
            if draft.depends_on is None:
                depends = [self.drafts[position - 1].id] if position else []
            else:
                depends = draft.depends_on
                for dep in depends:
                    if dep == draft.id:
                        raise self.error(
                            draft.depends_line,
                            f"{draft.id} depends on itself",
                            "name the criteria that must be done before it",
                        )
                    if dep not in known:
                        raise self.error(
                            draft.depends_line,
                            f"{draft.id} depends on {dep}, which the PRD does not define",
                            f"use one of {', '.join(sorted(known))}, or add {dep}",
                        )
            criteria.append(
                AcceptanceCriterion(
                    id=draft.id,
                    title=draft.title,
                    line=draft.line,
                    items=tuple(draft.items),
                    depends_on=tuple(depends),
                    notes=tuple(draft.notes),
                )
            )
        self._acyclic(criteria)
        return tuple(criteria)

    def _acyclic(self, criteria: Sequence[AcceptanceCriterion]) -> None:
        """A cycle of criteria could never run; say which, before the store is asked."""
        edges = {ac.id: ac.depends_on for ac in criteria}
        lines = {draft.id: draft.depends_line or draft.line for draft in self.drafts}
        done: set[str] = set()

        def visit(ac_id: str, path: list[str]) -> None:
            if ac_id in path:
                cycle = [*path[path.index(ac_id) :], ac_id]
                raise self.error(
                    lines[ac_id],
                    f"dependency cycle: {' -> '.join(cycle)}",
                    "remove one of these dependencies; a criterion in a cycle could never run",
                )
            if ac_id in done:
                return
            for dep in edges[ac_id]:
                visit(dep, [*path, ac_id])
            done.add(ac_id)

        for ac in criteria:
            visit(ac.id, [])


def _line(token: Token) -> int:
    return token.map[0] + 1 if token.map else 1


def _normal_id(text: str) -> str:
    """``ac-1``, ``AC 01`` and ``AC1`` are one criterion: ``AC1``."""
    match = _AC_ID.match(text.strip())
    assert match is not None
    return f"AC{int(match[1])}"


def _plain(text: str) -> str:
    """A heading as compared with the known ones: no case, no accents, no colon, no
    remark in parentheses (``Objetivos (or: Goals)``, as templates write them)."""
    text = _REMARK.sub("", text)
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.rstrip(":").split())
