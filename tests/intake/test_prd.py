"""The tasks a PRD becomes (capataz.intake.prd_plan): their instruction, their
dependencies by criterion, their keys, and the status of each criterion."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.config import Config
from capataz.intake.errors import PrdError, UnknownAgentError
from capataz.intake.prd_plan import instruction, key_prefix, prd_status, prepare_prd
from capataz.intake.tasks import submit
from capataz.prd import load_prd
from capataz.store import Store, TaskState

FIXTURES = Path(__file__).parents[1] / "prd" / "fixtures"

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
