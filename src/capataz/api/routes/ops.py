"""The runbook's health figures and runners: ``GET /ops/metrics``, ``GET
/ops/runner/status``, and forgetting an offline runner (destructive, so guarded). See
docs/runbook.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from capataz.api.auth import Access, destructive, requires
from capataz.api.deps import Answer, ok, store_of
from capataz.api.schemas import Forgotten, RunnerStatusOut
from capataz.runner.protocol import Envelope, QueueMetrics
from capataz.store import RunnerInfo, TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/ops", tags=["ops"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
Admin = Annotated[TokenInfo, Depends(requires(Access.ADMIN))]

# Runner endpoints (claim, heartbeat, log, step and result reports, cancel notices) go
# here with requires(Access.RUNNER) when remote runners arrive; none are served yet.


def runner_json(
    runner: RunnerInfo, current_runs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A runner with the runbook's ``status`` ("online"/"offline") and ``last_seen_at``,
    and the runs it is working on now (task, title, run id)."""
    return {
        "id": runner.id,
        "name": runner.name,
        "status": "online" if runner.online else "offline",
        "last_seen_at": runner.last_seen_at,
        "current_tasks": list(runner.current_tasks),
        "current_runs": list(current_runs or []),
        "labels": list(runner.labels),
        "hostname": runner.hostname,
        "pid": runner.pid,
        "concurrency": runner.concurrency,
        "started_at": runner.started_at,
        "stopped_at": runner.stopped_at,
    }


@router.get(
    "/metrics",
    summary="Tasks by state, runners, fail rate, backlog age",
    response_model=Envelope[QueueMetrics],
)
def get_metrics(request: Request, _: Reader) -> Answer:
    return ok(store_of(request).metrics())


@router.get(
    "/runner/status",
    summary="Every runner, online or offline, with last_seen_at",
    response_model=Envelope[list[RunnerStatusOut]],
)
def runner_status(request: Request, _: Reader) -> Answer:
    store = store_of(request)
    runners = store.runners.list()
    current = store.runners.current_runs()
    return ok([runner_json(r, current.get(r.id)) for r in runners])


@router.delete(
    "/runners/{runner_id}",
    summary="Forget an offline runner (needs [server] allow_destructive)",
    response_model=Envelope[Forgotten],
)
def forget_runner(
    request: Request, token: Admin, runner_id: Annotated[str, Path(max_length=200)]
) -> Answer:
    destructive(request)  # after the role check: strangers get 401/403 first
    # NoSuchRunnerError: 404, an online runner: 409 (api/errors.py)
    store_of(request).runners.forget(runner_id, actor=f"api:{token.name}")
    return ok({"id": runner_id, "forgotten": True})
