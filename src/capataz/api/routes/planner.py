"""The planner over HTTP: the runbook's ``POST /ops/gpt/run`` and ``/ops/directives``
(docs/runbook.md, docs/planner.md).

Thin: the planner (:mod:`capataz.planner`) does the work; every refusal reaches the
client through the one table of statuses in :mod:`capataz.api.errors` — 409 while
there is no ``[planner]`` or its credential is WAITING, 502/503/504 when the model
API refuses the key, rate limits or does not answer. ``/ops/gpt/run`` waits for the
model (at most ``[planner] timeout`` per attempt), as the runbook's endpoint did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, Offset, config_of, has_nul, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.schemas import DirectiveAppliedOut, DirectiveOut, PlanOut
from capataz.planner import apply_directive, plan, planner_key, require_planner
from capataz.runner.protocol import Envelope
from capataz.store import DirectiveStatus, TokenInfo, directive_json, task_json

__all__ = ["router"]

router = APIRouter(tags=["planner"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
Operator = Annotated[TokenInfo, Depends(requires(Access.OPERATE))]
DirectiveId = Annotated[str, PathParam(max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and has_nul(value):
            raise ValueError("text cannot contain NUL (\\x00) characters")
        return value


class GptRun(_Body):
    """What to plan for; both optional (no goal: the next most useful work)."""

    environment: str | None = Field(default=None, max_length=200)
    goal: str | None = Field(default=None, max_length=20_000)


class Reject(_Body):
    reason: str = Field(min_length=1, max_length=2_000, description="Why it is refused.")


@router.post(
    "/ops/gpt/run",
    summary="Ask the planner for directives and store them",
    response_model=Envelope[PlanOut],
)
def gpt_run(request: Request, token: Operator, body: GptRun | None = None) -> Answer:
    store, config = store_of(request), config_of(request)
    require_planner(config)
    state_dir: Path | None = getattr(request.app.state, "state_dir", None)
    key = planner_key(store, config, state_dir)
    result = plan(
        store,
        config,
        api_key=key,
        repo_root=state_dir.parent if state_dir is not None else None,
        goal=body.goal if body else None,
        environment=body.environment if body else None,
        actor=f"api:{token.name}",
    )
    return ok(result.as_json())


@router.get(
    "/ops/directives",
    summary="Directives, newest first; filter by status, page with limit/offset",
    response_model=Envelope[list[DirectiveOut]],
)
def list_directives(
    request: Request,
    response: Response,
    _: Reader,
    status: DirectiveStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Answer:
    found, total = store_of(request).directives.page(status, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return ok([directive_json(d) for d in found])


def _checked(directive_id: str) -> str:
    if has_nul(directive_id):  # no id has one; PostgreSQL could not even compare it
        raise ApiError(404, f"no directive {directive_id}")
    return directive_id


@router.get(
    "/ops/directives/{directive_id}",
    summary="One directive",
    response_model=Envelope[DirectiveOut],
)
def get_directive(request: Request, _: Reader, directive_id: DirectiveId) -> Answer:
    return ok(directive_json(store_of(request).directives.get(_checked(directive_id))))


@router.post(
    "/ops/directives/{directive_id}/apply",
    summary="Queue a pending directive's tasks (all or none)",
    response_model=Envelope[DirectiveAppliedOut],
)
def apply(request: Request, token: Operator, directive_id: DirectiveId) -> Answer:
    directive, created = apply_directive(
        store_of(request), config_of(request), _checked(directive_id), actor=f"api:{token.name}"
    )
    return ok({**directive_json(directive), "created_tasks": [task_json(t) for t in created]})


@router.post(
    "/ops/directives/{directive_id}/reject",
    summary="Refuse a pending directive",
    response_model=Envelope[DirectiveOut],
)
def reject(request: Request, token: Operator, directive_id: DirectiveId, body: Reject) -> Answer:
    directive = store_of(request).directives.reject(
        _checked(directive_id), body.reason, actor=f"api:{token.name}"
    )
    return ok(directive_json(directive))
