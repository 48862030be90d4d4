"""A PRD as git holds it (capataz.prd.branch): the criterion a task's key stands for,
the PRD read at a commit, and a criterion ticked on a branch as capataz's commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git

from capataz.prd import PrdError
from capataz.prd.branch import CriterionRef, criterion_of, prd_at, tick_on_branch
from capataz.workspace.repo import Repository

PRD = "docs/prd/x.md"
TEXT = "# PRD: X\n\n## Acceptance Criteria\n\n### AC1: One\n- [ ] a\n\n### AC2: Two\n- [ ] b\n"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("prd:docs/prd/x.md#AC1", CriterionRef("docs/prd/x.md", "AC1")),
        ("prd:x.md#AC12", CriterionRef("x.md", "AC12")),
        (None, None),
        ("plan:docs/x.md#AC1", None),
        ("prd:docs/x.md#ac1", None),
        ("prd:docs/x.md", None),
        ("prd:/etc/passwd#AC1", None),
        ("prd:../outside.md#AC1", None),
        ("prd:docs//x.md#AC1", None),
    ],
)
def test_the_criterion_a_key_stands_for(key: str | None, expected: CriterionRef | None) -> None:
    assert criterion_of(key) == expected
    if expected is not None:
        assert expected.key == key


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Repository:
    return Repository.discover(make_repo(files={PRD: TEXT}))


def test_the_prd_at_a_commit_and_what_cannot_be_read(repo: Repository) -> None:
    base = git(repo.root, "rev-parse", "main")
    assert [ac.id for ac in prd_at(repo, base, PRD).criteria] == ["AC1", "AC2"]
    with pytest.raises(PrdError, match=r"docs/other\.md: not in commit"):
        prd_at(repo, base, "docs/other.md")


def test_tick_on_branch_ticks_the_tip_and_refuses_an_unknown_criterion(
    repo: Repository,
) -> None:
    done = tick_on_branch(repo, "main", PRD, ["AC2"], "prd: tick AC2")
    assert done is not None and done.commit is not None and done.refused is None
    assert git(repo.root, "show", f"main:{PRD}") + "\n" == TEXT.replace("- [ ] b", "- [x] b")
    assert tick_on_branch(repo, "main", PRD, ["AC2"], "again") is None  # nothing to tick
    with pytest.raises(PrdError, match="has no AC9 on branch main"):
        tick_on_branch(repo, "main", PRD, ["AC9"], "prd: tick AC9")
    with pytest.raises(PrdError, match="not on branch main"):
        tick_on_branch(repo, "main", "docs/gone.md", ["AC1"], "prd: tick AC1")
