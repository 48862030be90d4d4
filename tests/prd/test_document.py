"""The PRD document (capataz.prd.document): the documented format verbatim, Spanish and
English headings, checked items and their lines, dependencies, every refusal as one
line naming the file and line, and ``tick`` changing only the markers it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.prd import ChecklistItem, PrdError, load_prd, parse_prd, tick

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_documented_template_verbatim() -> None:
    prd = load_prd(FIXTURES / "prd_template.md")
    assert prd.path == FIXTURES / "prd_template.md"
    assert prd.title == "Feature X"
    assert prd.objectives == ("Objetivo 1",)
    assert [(ac.id, ac.title) for ac in prd.criteria] == [
        ("AC1", "Título del AC"),
        ("AC2", "Otro AC"),
    ]
    first, second = prd.criteria
    assert first.items == (
        ChecklistItem("Checklist item 1", checked=False, line=9),
        ChecklistItem("Checklist item 2", checked=True, line=10),
    )
    assert second.items == (ChecklistItem("Checklist item", checked=False, line=13),)
    assert (first.depends_on, second.depends_on) == ((), ("AC1",))
    assert (first.checked, second.checked) == (1, 0)
    assert prd.out_of_scope == ("Item fuera de scope",)
    assert prd.technical_notes == ("Nota técnica",)


def test_checkbox_lines_point_at_their_markers() -> None:
    """The lines are what a later step ticks: each must hold its own `[ ]`/`[x]`."""
    for name in ("prd_template.md", "prd_es.md", "prd_en.md"):
        lines = (FIXTURES / name).read_text().splitlines()
        for ac in load_prd(FIXTURES / name).criteria:
            for item in ac.items:
                marker = "[x]" if item.checked else "[ ]"
                assert lines[item.line - 1].lstrip().lower().startswith(f"- {marker}"), name


def test_spanish_headings_explicit_dependencies_and_notes() -> None:
    prd = load_prd(FIXTURES / "prd_es.md")
    assert prd.title == "Exportar informes"
    assert prd.objectives == (
        "Los usuarios descargan sus informes en CSV",
        "Sin esperar al soporte",
    )
    export, csv, audit = prd.criteria
    assert export.depends_on == ()
    assert csv.depends_on == ("AC1",)
    assert audit.depends_on == ()  # "Depende de: ninguno": no dependency, not the one before
    # A checkbox continued on the next line is one item; [X] counts as checked.
    assert [(i.text, i.checked) for i in csv.items] == [
        ("Separador configurable (coma por defecto)", False),
        ("Cabeceras en la primera fila", True),
    ]
    assert audit.notes == ("Cada exportación queda registrada.",)
    assert prd.out_of_scope == ("Exportar a PDF",)
    assert prd.technical_notes == ("Usar el módulo csv de la biblioteca estándar",)


def test_english_headings_default_order_and_code_blocks() -> None:
    prd = load_prd(FIXTURES / "prd_en.md")
    assert prd.title == "Login throttling"  # no "PRD:" prefix to take off
    assert prd.objectives == ("Stop password guessing",)
    assert [(ac.id, ac.title, ac.depends_on) for ac in prd.criteria] == [
        ("AC1", "Count failures", ()),
        ("AC2", "Lock accounts", ("AC1",)),
        ("AC3", "Tell the user", ("AC1", "AC2")),
    ]
    # The ### AC9 in a fenced code block is code, not a criterion.
    assert len(prd.criteria[2].items) == 1
    assert prd.technical_notes == ("Keep the counters in the existing cache",)
    assert prd.out_of_scope == ("CAPTCHAs",)


def test_ids_are_normalised_and_dependencies_take_several_spellings() -> None:
    prd = parse_prd(
        "# T\n## Criterios de aceptacion\n### ac-1: a\n### AC 02: b\n"
        "### AC3: c\nDepende de: AC1 y ac-2\n"
    )
    assert [(ac.id, ac.depends_on) for ac in prd.criteria] == [
        ("AC1", ()),
        ("AC2", ("AC1",)),
        ("AC3", ("AC1", "AC2")),
    ]


def test_only_an_items_first_paragraph_is_its_checkbox() -> None:
    prd = parse_prd(
        "# T\n## Acceptance Criteria\n### AC1: a\n- [ ] real\n\n  [ ] second paragraph\n"
        "\n[ ] a paragraph, not an item\n"
    )
    (ac,) = prd.criteria
    assert [(i.text, i.line) for i in ac.items] == [("real", 4)]
    assert ac.notes == ("[ ] second paragraph", "[ ] a paragraph, not an item")


@pytest.mark.parametrize(
    ("text", "line", "needles"),
    [
        ("## Acceptance Criteria\n### AC1: a\n", 1, ["no title", "# PRD: title"]),
        ("# T\n\n## Objectives\n- x\n", 1, ["no acceptance criteria", "### AC1: title"]),
        ("# T\n\n## Acceptance Criteria\n\nnone yet\n", 3, ["no acceptance criteria"]),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\n### AC1: b\n",
            4,
            ["AC1 is used twice (first on line 3)", "its own number"],
        ),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\n### AC2: b\nDepends on: AC7\n",
            5,
            ["AC2 depends on AC7, which the PRD does not define", "use one of AC1, AC2"],
        ),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\nDepends on: AC1\n",
            4,
            ["AC1 depends on itself"],
        ),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\nDepends on: AC2\n### AC2: b\n",
            4,
            ["dependency cycle: AC1 -> AC2 -> AC1"],
        ),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\nDepends on: the login\n",
            4,
            ["'the login' is not an acceptance criterion id", "Depends on: AC1, AC2"],
        ),
        (
            "# T\n## Acceptance Criteria\n### AC1: a\nDepends on: -\n\nDepende de: -\n",
            6,
            ["says what it depends on twice"],
        ),
        (
            "# T\n## Acceptance Criteria\n### Login works\n",
            3,
            ["'Login works' is not an acceptance criterion heading", "### AC1: title"],
        ),
        ("# T\n## Acceptance Criteria\n### AC1:\n", 3, ["not an acceptance criterion heading"]),
    ],
)
def test_every_refusal_names_file_line_and_fix(text: str, line: int, needles: list[str]) -> None:
    with pytest.raises(PrdError) as caught:
        parse_prd(text, path=Path("docs/prd/x.md"))
    message = str(caught.value)
    assert "\n" not in message and caught.value.fix
    assert message.startswith(f"docs/prd/x.md:{line}: "), message
    for needle in needles:
        assert needle in message, message
    assert caught.value.exit_code == 2


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PrdError, match="cannot be read"):
        load_prd(tmp_path / "missing.md")
    (tmp_path / "latin1.md").write_bytes("# Dise\xf1o\n".encode("latin-1"))
    with pytest.raises(PrdError, match="UTF-8"):
        load_prd(tmp_path / "latin1.md")


def test_tick_checks_only_the_given_criteria_and_changes_nothing_else() -> None:
    text = (
        "# T\r\n## Acceptance Criteria\r\n### AC1: a\r\n- [ ] one\r\n1. [ ] two\r\n"
        "### AC2: b\r\n* [ ] three\r\n```\r\n- [ ] code, not an item\r\n```\r\n"
    )
    ticked = tick(text, ["AC1"])
    assert ticked == text.replace("- [ ] one", "- [x] one").replace("1. [ ] two", "1. [x] two")
    assert [ac.checked for ac in parse_prd(ticked).criteria] == [2, 0]
    both = tick(ticked, ["AC1", "AC2"])
    assert both.count("[x]") == 3 and "- [ ] code, not an item" in both
    assert tick(both, ["AC2"]) == both
