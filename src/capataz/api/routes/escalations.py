"""Escalations: the list a reviewer works through (open ones by default, with what
they are asked to judge), and answering one: a human approves, rejects, modifies or
aborts a run that stopped to ask; the runner waiting on it picks the answer up."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, ok, store_of
from capataz.api.routes.tasks import get_task_or_404
from capataz.api.schemas import Decided, EscalationOut
from capataz.runner.protocol import Envelope
from capataz.store import TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/ops/escalations", tags=["escalations"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
Operator = Annotated[TokenInfo, Depends(requires(Access.OPERATE))]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "modify", "abort"]
    note: str = Field(default="", max_length=10_000)


@router.get(
    "",
    summary="Escalations, newest first; open ones unless open=false",
    response_model=Envelope[list[EscalationOut]],
)
def list_escalations(
    request: Request,
    _: Reader,
    open_only: Annotated[
        bool,
        Query(alias="open", description="true: only those waiting for an answer; false: all."),
    ] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Answer:
    found = store_of(request).escalations.list(open_only=open_only, limit=limit, offset=offset)
    return ok(found)


@router.post(
    "/{task_id}/decision",
    summary="Answer the task's open escalation",
    response_model=Envelope[Decided],
)
def decide(
    request: Request,
    token: Operator,
    task_id: Annotated[str, Path(max_length=200)],
    body: Decision,
) -> Answer:
    store = store_of(request)
    get_task_or_404(store, task_id)
    actor = f"api:{token.name}"
    store.escalations.answer(task_id, body.decision, note=body.note, decided_by=actor)
    return ok({"task": get_task_or_404(store, task_id), "decision": body.decision})
