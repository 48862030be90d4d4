"""Runs: the history (newest first, filter by task and status, paged) and one run with
its steps, file changes, violations, decisions and log tail. A run's ``status`` is the
runbook's word for it (docs/runbook.md: ``select(.status=="failed")`` finds failures);
``lifecycle`` and ``outcome`` keep the stored detail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, Offset, has_nul, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.schemas import RunDetailOut, RunOut
from capataz.runner.protocol import Envelope
from capataz.store import RUN_FILTERS, TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]


@router.get(
    "",
    summary="Runs, newest first; X-Total-Count has the total",
    response_model=Envelope[list[RunOut]],
)
def list_runs(
    request: Request,
    response: Response,
    _: Reader,
    *,
    task_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[
        str | None,
        Query(
            max_length=20,
            description="failed, running, succeeded, escalated, cancelled, lost, released "
            "(docs/runbook.md), or finished: every run that reported an ending.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Answer:
    if has_nul(task_id):
        raise ApiError(422, "query.task_id: text cannot contain NUL (\\x00) characters")
    if status is not None and status not in RUN_FILTERS:
        raise ApiError(422, f"query.status: use one of {', '.join(RUN_FILTERS)}")
    store = store_of(request)
    found = store.runs.list(task_id=task_id, status=status, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(store.runs.count(task_id=task_id, status=status))
    return ok(found)


@router.get(
    "/{run_id}",
    summary="One run with everything recorded about it",
    response_model=Envelope[RunDetailOut],
)
def get_run(request: Request, _: Reader, run_id: Annotated[str, Path(max_length=200)]) -> Answer:
    if has_nul(run_id):  # no run id has one; PostgreSQL could not even compare it
        raise ApiError(404, f"no run {run_id}")
    return ok(store_of(request).runs.get(run_id))  # NoSuchRunError: 404 (api/errors.py)
