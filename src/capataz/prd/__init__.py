"""PRDs: the document (:mod:`capataz.prd.document`, a pure parser and ``tick``) and
the PRD as committed on a branch (:mod:`capataz.prd.branch`: which criterion a task
stands for, reading the PRD at a commit, ticking a criterion as a capataz commit).

Below the pipeline, so that a run can tick the criterion it landed and check its
changes against the PRD's out-of-scope list; intake (``prd import``) and the CLI use
the same model."""

from __future__ import annotations

from capataz.prd.document import (
    AcceptanceCriterion,
    ChecklistItem,
    Prd,
    PrdError,
    load_prd,
    parse_prd,
    tick,
)

__all__ = [
    "AcceptanceCriterion",
    "ChecklistItem",
    "Prd",
    "PrdError",
    "load_prd",
    "parse_prd",
    "tick",
]
