"""The runner's side of the control plane (``/runner``, runner or admin tokens): what a
remote runner (``capataz runner run --server``) calls instead of the database. Thin on
purpose: parse, call the Store, answer; the Store already enforces leases and fencing
tokens, and makes the writes repeatable (claim keys, repeated reports accepted).

Statuses a runner relies on: a stale fencing token is 409 (the runner stops that run);
claiming a named task that is taken, waiting for dependencies, not due or ended is 409
with the reason; an unknown task, run or runner is 404.

Steps and log chunks carry the run's record number (``seq``); a number not above the
last one stored for the run (``runs.record_seq``, advanced in the record's own
transaction) is acknowledged and dropped, so a chunk resent after a lost answer is not
appended twice, even across server restarts and several server processes. A runner
sends everything its outbox holds in one request (``POST /runs/{id}/records``, one
transaction); the one-record routes stay for older runners."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.fleet import ReadyHub
from capataz.api.routes.tasks import get_task_or_404
from capataz.runner.protocol import (
    SWEEPER_HEADER,
    Accepted,
    BatchRecorded,
    Claim,
    ClaimedTaskOut,
    ClaimThis,
    Complete,
    Current,
    Envelope,
    Escalate,
    EscalationAnswerOut,
    Heartbeat,
    LogChunk,
    Opened,
    QueueMetrics,
    Recorded,
    Records,
    Register,
    Release,
    Released,
    Rescued,
    RunDetailsIn,
    RunnerIdOut,
    Step,
    Sweep,
)
from capataz.store import RunDetails, RunRecord, TokenInfo

__all__ = ["MAX_CLAIM_WAIT", "router"]

# The longest a claim may wait for work (``?wait=``); longer asks are cut to this, so a
# runner's wait stays well inside proxies' idle timeouts.
MAX_CLAIM_WAIT = 30.0


async def _advertise_sweeper(response: Response) -> None:
    """Every answer says this server sweeps expired leases itself (the app's lifespan,
    api/fleet.py), so its runners stop calling /runner/sweep from their first request.
    Async: a sync dependency would cost every runner request a thread hop."""
    response.headers[SWEEPER_HEADER] = "on"


router = APIRouter(prefix="/runner", tags=["runner"], dependencies=[Depends(_advertise_sweeper)])
Runner = Annotated[TokenInfo, Depends(requires(Access.RUNNER))]
TaskId = Annotated[str, Path(max_length=200)]
RunId = Annotated[str, Path(max_length=200)]
RunnerId = Annotated[str, Path(max_length=200)]
Token = Annotated[int, Query(ge=0, description="The fencing token of the runner's lease.")]
Wait = Annotated[
    float,
    Query(
        ge=0,
        description=(
            "Seconds to wait for a task when none is ready (long poll; at most "
            f"{MAX_CLAIM_WAIT:g}); 0 answers at once."
        ),
    ),
]


def _stale(task_id: str, fencing_token: int) -> ApiError:
    return ApiError(
        409,
        f"task {task_id} is not held under fencing token {fencing_token} "
        "(cancelled, rescued by the sweeper, or given to another runner)",
    )


# -- the runner itself ------------------------------------------------------------------


@router.post(
    "/register",
    summary="Register a starting runner; returns its id",
    response_model=Envelope[RunnerIdOut],
)
def register(request: Request, _: Runner, body: Register) -> Answer:
    runner_id = store_of(request).runners.register(
        body.name,
        labels=body.labels,
        hostname=body.hostname,
        pid=body.pid,
        concurrency=body.concurrency,
    )
    return ok({"runner_id": runner_id})


@router.post(
    "/{runner_id}/heartbeat", summary="The runner is alive", response_model=Envelope[RunnerIdOut]
)
def runner_heartbeat(request: Request, _: Runner, runner_id: RunnerId) -> Answer:
    store_of(request).runners.heartbeat(runner_id)  # NoSuchRunnerError: 404
    return ok({"runner_id": runner_id})


@router.post(
    "/{runner_id}/stopped", summary="The runner shut down", response_model=Envelope[RunnerIdOut]
)
def runner_stopped(request: Request, _: Runner, runner_id: RunnerId) -> Answer:
    store_of(request).runners.mark_stopped(runner_id)
    return ok({"runner_id": runner_id})


@router.get(
    "/metrics",
    summary="Queue figures (an idle runner checks whether work is left)",
    response_model=Envelope[QueueMetrics],
)
def metrics(request: Request, _: Runner) -> Answer:
    return ok(store_of(request).metrics())


@router.post("/sweep", summary="Rescue tasks whose lease expired", response_model=Envelope[Rescued])
def sweep(request: Request, _: Runner, body: Sweep) -> Answer:
    return ok({"rescued": store_of(request).sweep(actor=body.actor)})


# -- leases -----------------------------------------------------------------------------


@router.post(
    "/claim",
    summary="Lease the most urgent ready task (data null when none)",
    response_model=Envelope[ClaimedTaskOut | None],
)
async def claim(request: Request, _: Runner, body: Claim, wait: Wait = 0.0) -> Answer:
    """With ``wait``, an empty queue holds the request (on an event, with no thread or
    connection) until the server's wake-up says a task may be ready, then claims; a
    claim that lost the race waits again, until the deadline answers null. A client
    gone meanwhile is not given a task (one that leaves after the claim loses it to
    the sweeper when its lease expires)."""
    store = store_of(request)
    hub: ReadyHub = request.app.state.ready_hub
    deadline = time.monotonic() + min(wait, MAX_CLAIM_WAIT)
    waited = False
    while True:
        woken = hub.generation()
        claimed = await run_in_threadpool(
            store.leases.claim,
            body.runner_id,
            body.lease_seconds,
            body.labels,
            claim_key=body.claim_key,
        )
        remaining = deadline - time.monotonic()
        if claimed is not None or remaining <= 0:
            outcome = "claimed" if claimed is not None else "empty"
            hub.claims[f"{outcome}_after_wait" if waited else outcome] += 1
            return ok(claimed)
        await hub.wait(woken, remaining)
        waited = True
        if await request.is_disconnected():
            hub.claims["gone"] += 1
            return ok(None)


@router.post(
    "/tasks/{task_id}/claim",
    summary="Lease this task (409 when it cannot be)",
    response_model=Envelope[ClaimedTaskOut],
)
def claim_task(request: Request, _: Runner, task_id: TaskId, body: ClaimThis) -> Answer:
    claimed = store_of(request).leases.claim_task(  # 404 unknown, 409 ClaimConflictError
        task_id, body.runner_id, body.lease_seconds, claim_key=body.claim_key
    )
    return ok(claimed)


@router.post(
    "/tasks/{task_id}/heartbeat",
    summary="Extend the lease (409 when stale)",
    response_model=Envelope[Current],
)
def heartbeat(request: Request, _: Runner, task_id: TaskId, body: Heartbeat) -> Answer:
    if not store_of(request).leases.heartbeat(task_id, body.fencing_token, body.lease_seconds):
        raise _stale(task_id, body.fencing_token)
    return ok({"current": True})


@router.get(
    "/tasks/{task_id}/current",
    summary="Is the lease still this runner's",
    response_model=Envelope[Current],
)
def current(request: Request, _: Runner, task_id: TaskId, token: Token) -> Answer:
    return ok({"current": store_of(request).leases.is_current(task_id, token)})


@router.post(
    "/tasks/{task_id}/release",
    summary="Give the task back unfinished",
    response_model=Envelope[Released],
)
def release(request: Request, _: Runner, task_id: TaskId, body: Release) -> Answer:
    store = store_of(request)
    if not store.leases.release(
        task_id, body.fencing_token, body.reason, delay_seconds=body.delay_seconds
    ):
        raise _stale(task_id, body.fencing_token)
    return ok({"released": True})


@router.post(
    "/tasks/{task_id}/complete",
    summary="Report how the attempt ended",
    response_model=Envelope[Accepted],
)
def complete(request: Request, _: Runner, task_id: TaskId, body: Complete) -> Answer:
    store = store_of(request)
    details = _run_details(body.details) if body.details is not None else None
    accepted = store.leases.complete(  # a state or detail no run reports: 422
        task_id,
        body.fencing_token,
        body.state,
        body.reason,
        decision=body.decision,
        actor=body.actor,
        details=details,
    )
    if not accepted:
        raise _stale(task_id, body.fencing_token)
    return ok({"accepted": True})


@router.get(
    "/tasks/{task_id}/escalation",
    summary="The answer to the run's question, if any",
    response_model=Envelope[EscalationAnswerOut | None],
)
def poll_escalation(request: Request, _: Runner, task_id: TaskId, token: Token) -> Answer:
    return ok(store_of(request).escalations.poll(task_id, token))


@router.post(
    "/tasks/{task_id}/escalation",
    summary="Ask a human about the run",
    response_model=Envelope[Opened],
)
def open_escalation(request: Request, _: Runner, task_id: TaskId, body: Escalate) -> Answer:
    store = store_of(request)
    get_task_or_404(store, task_id)
    if not store.escalations.open(task_id, body.fencing_token, body.reason, body.details):
        raise _stale(task_id, body.fencing_token)
    return ok({"opened": True})


# -- what a run records -----------------------------------------------------------------


@router.post(
    "/runs/{run_id}/steps",
    summary="A step of the run started or finished",
    response_model=Envelope[Recorded],
)
def step(request: Request, _: Runner, run_id: RunId, body: Step) -> Answer:
    store = store_of(request)

    def record() -> bool:
        if body.status == "started":
            return store.runs.step_started(run_id, body.phase, seq=body.seq)
        return store.runs.step_finished(run_id, body.phase, body.outcome, seq=body.seq)

    return ok({"recorded": record()})  # NoSuchRunError: 404


@router.post(
    "/runs/{run_id}/log",
    summary="Append a chunk to the run's log",
    response_model=Envelope[Recorded],
)
def append_log(request: Request, _: Runner, run_id: RunId, body: LogChunk) -> Answer:
    store = store_of(request)
    return ok({"recorded": store.runs.append_log(run_id, body.text, seq=body.seq)})


@router.post(
    "/runs/{run_id}/records",
    summary="Several numbered steps and log chunks of the run, in one transaction",
    response_model=Envelope[BatchRecorded],
)
def records(request: Request, _: Runner, run_id: RunId, body: Records) -> Answer:
    """What a remote runner's outbox holds, sent in one request; records already stored
    (by ``seq``) are dropped. ``current`` says whether the run's lease is still held,
    so the runner learns of a cancel without asking separately."""
    batch = [RunRecord(**item.model_dump()) for item in body.records]
    stored, current = store_of(request).runs.record_batch(run_id, batch)
    return ok({"recorded": stored, "current": current})


def _run_details(details: RunDetailsIn) -> RunDetails:
    """The reported details as the Store takes them (the model already dropped the
    fields this server does not know: a newer runner's)."""
    return RunDetails(**details.model_dump())
