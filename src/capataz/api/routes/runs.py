"""Runs: the history (newest first, filter by task and status, paged) and one run with
its steps, file changes, violations, decisions and log tail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from capataz.api.auth import Access, requires
from capataz.api.deps import ok, store_of
from capataz.api.errors import ApiError
from capataz.errors import TaskError
from capataz.store import RunStatus, TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]


@router.get("", summary="Runs, newest first")
def list_runs(
    request: Request,
    _: Reader,
    task_id: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    found = store_of(request).list_runs(
        task_id=task_id, status=status.value if status else None, limit=limit, offset=offset
    )
    return ok(found)


@router.get("/{run_id}", summary="One run with everything recorded about it")
def get_run(
    request: Request, _: Reader, run_id: Annotated[str, Path(max_length=200)]
) -> dict[str, Any]:
    try:
        return ok(store_of(request).get_run(run_id))
    except TaskError:
        raise ApiError(404, f"no run {run_id}") from None
