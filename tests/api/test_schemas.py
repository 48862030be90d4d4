"""The answer models are the store's records on the wire: a field added to a record and
forgotten in its model would silently vanish from the answers (FastAPI serialises
through the model), so the two are held together here, name for name, in order."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from capataz.api.schemas import (
    DirectiveOut,
    ProposedTaskOut,
    RunDetailOut,
    RunOut,
    StepOut,
    TaskOut,
)
from capataz.runner.protocol import ClaimedTaskOut, EscalationAnswerOut, RunDetailsIn
from capataz.store import (
    Directive,
    ProposedTask,
    RunDetail,
    RunDetails,
    RunInfo,
    StepInfo,
    Task,
)
from capataz.store.records import ClaimedTask, EscalationAnswer


@pytest.mark.parametrize(
    ("model", "record"),
    [
        (TaskOut, Task),
        (RunOut, RunInfo),
        (RunDetailOut, RunDetail),
        (StepOut, StepInfo),
        (ClaimedTaskOut, ClaimedTask),
        (EscalationAnswerOut, EscalationAnswer),
        (RunDetailsIn, RunDetails),
        (DirectiveOut, Directive),
        (ProposedTaskOut, ProposedTask),
    ],
)
def test_models_carry_every_field_of_their_record(model: type[BaseModel], record: type) -> None:
    assert list(model.model_fields) == [f.name for f in dataclasses.fields(record)]
