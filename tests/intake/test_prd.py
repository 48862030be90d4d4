"""The PRD parser (capataz.intake.prd) and the tasks a PRD becomes
(capataz.intake.prd_plan): the documented format verbatim, Spanish and English
headings, checked items and their lines, dependencies, and every refusal as one line
naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.config import Config
from capataz.intake.errors import PrdError, UnknownAgentError
from capataz.intake.prd import ChecklistItem, load_prd, parse_prd, tick
from capataz.intake.prd_plan import instruction, key_prefix, prd_status, prepare_prd
from capataz.intake.tasks import submit
from capataz.store import Store, TaskState

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


# -- from criteria to tasks ------------------------------------------------------------


def _config() -> Config:
    return Config.model_validate(
        {"agents": {"shell": {"command": ["bash", "-c", "{instruction}"]}}}
    )


def test_key_prefix_is_the_path_in_the_repository(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    assert key_prefix(tmp_path, tmp_path / "docs" / "x.md") == "prd:docs/x.md#"
    with pytest.raises(PrdError, match="outside the repository"):
        key_prefix(tmp_path / "docs", tmp_path / "x.md")


def test_instruction_carries_the_criterion_and_the_prds_context() -> None:
    prd = load_prd(FIXTURES / "prd_es.md")
    text = instruction(prd, prd.criteria[1], "docs/prd/es.md")
    assert text.startswith("Implement acceptance criterion AC2 of the PRD 'Exportar informes'")
    assert "docs/prd/es.md" in text and "## AC2: Formato CSV" in text
    assert "- [ ] Separador configurable (coma por defecto)" in text
    assert "- [x] Cabeceras en la primera fila" in text
    assert "- Los usuarios descargan sus informes en CSV" in text
    assert "## Technical notes\n- Usar el módulo csv" in text
    assert "## Out of scope (do not do)\n- Exportar a PDF" in text
    assert "Botón de exportar" not in text  # other criteria are their own tasks


def test_prepared_tasks_depend_on_each_other_by_criterion() -> None:
    prd = load_prd(FIXTURES / "prd_en.md")
    ids = iter(["t-one", "t-two", "t-three"])
    prepared = prepare_prd(
        prd, _config(), prefix="prd:docs/en.md#", agent="shell", new_id=lambda: next(ids)
    )
    assert [p.label for p in prepared] == ["AC1", "AC2", "AC3"]
    specs = [p.spec for p in prepared]
    assert [s.title for s in specs] == [
        "Login throttling: AC1 Count failures",
        "Login throttling: AC2 Lock accounts",
        "Login throttling: AC3 Tell the user",
    ]
    assert [s.depends_on for s in specs] == [(), ("t-one",), ("t-one", "t-two")]
    assert all(s.labels == ("prd",) and s.agent == "shell" for s in specs)
    assert [s.idempotency_key for s in specs] == [
        "prd:docs/en.md#AC1",
        "prd:docs/en.md#AC2",
        "prd:docs/en.md#AC3",
    ]


def test_an_unknown_agent_names_the_criterion() -> None:
    prd = load_prd(FIXTURES / "prd_en.md")
    with pytest.raises(UnknownAgentError, match=r"prd_en.md: AC1: .*gpt"):
        prepare_prd(prd, _config(), prefix="prd:x.md#", agent="gpt")


def test_status_pairs_criteria_with_their_tasks(store: Store) -> None:
    prd = load_prd(FIXTURES / "prd_en.md")
    prefix = "prd:docs/en.md#"
    assert [row.task for row in prd_status(store, prd, prefix)] == [None, None, None]
    prepared = prepare_prd(prd, _config(), prefix=prefix)
    first = submit(store, prepared[:1], actor="test")[0].task
    rows = prd_status(store, prd, prefix)
    assert [(r.criterion.id, r.key) for r in rows] == [
        ("AC1", "prd:docs/en.md#AC1"),
        ("AC2", "prd:docs/en.md#AC2"),
        ("AC3", "prd:docs/en.md#AC3"),
    ]
    assert rows[0].task is not None and rows[0].task.id == first.id
    assert rows[0].task.status is TaskState.READY
    assert rows[1].task is None and rows[2].task is None
