"""Context between tasks for remote runners (``/runner/tasks/{id}/context``, runner
role): what a database runner reads and writes through its own
:class:`~capataz.context_store.ContextStore`, a remote runner gets from here.

The server decides, from its own configuration, what a task may read (its direct
dependencies' unexpired entries, filtered by its agent's ``context_read`` globs) and
publish (keys its agent's ``context_write`` globs allow), so a runner cannot ask for
more than a database runner would get. Both routes answer only while the fencing
token holds the task's lease (409 otherwise, 404 for an unknown task). Values are
encrypted and decrypted with the server's master key (the vault's: see
:func:`capataz.api.routes.requests.server_vault`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, config_of, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.routes.requests import server_vault
from capataz.config import AgentConfig
from capataz.context.keys import ContextError, allowed, check_key, encode_value
from capataz.context.store import ContextStore
from capataz.runner.protocol import ContextEntries, Envelope, Publish, Published
from capataz.store import Store, Task, TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/runner", tags=["runner"])
Runner = Annotated[TokenInfo, Depends(requires(Access.RUNNER))]
TaskId = Annotated[str, Path(max_length=200)]
Token = Annotated[int, Query(ge=0, description="The fencing token of the runner's lease.")]


def _leased_task(request: Request, task_id: str, fencing_token: int) -> tuple[Store, Task]:
    """The task, if ``fencing_token`` holds its lease: 404 unknown, 409 stale."""
    store = store_of(request)
    task = store.tasks.get(task_id)  # NoSuchTaskError: 404 (api/errors.py)
    if not store.leases.is_current(task_id, fencing_token):
        raise ApiError(409, f"task {task_id} is not held under fencing token {fencing_token}")
    return store, task


def _agent(request: Request, task: Task) -> AgentConfig:
    agent = config_of(request).agents.get(task.agent)
    if agent is None:
        raise ApiError(422, f"task {task.id}: the server's configuration has no agent {task.agent}")
    return agent


def _context_store(request: Request, store: Store) -> ContextStore:
    """The vault is opened only when a value is encrypted or decrypted."""
    return ContextStore(store, lambda: server_vault(request, store), cache_size=0)


@router.get(
    "/tasks/{task_id}/context",
    summary="The context the claimed task receives, for a remote runner holding its lease",
    response_model=Envelope[ContextEntries],
)
def task_context(request: Request, _: Runner, task_id: TaskId, token: Token) -> Answer:
    """Its direct dependencies' unexpired entries its agent may read. Answered without
    ``ok()``: the agent must receive the values exactly as a database runner's agent
    does (a runner-role token already reaches the task's secrets, unmasked)."""
    store, task = _leased_task(request, task_id, token)
    read = _agent(request, task).context_read
    entries = _context_store(request, store).for_tasks(task.depends_on, read=read)
    return {"ok": True, "data": {"entries": entries}}


@router.post(
    "/tasks/{task_id}/context",
    summary="Publish the claimed task's context entries (under its lease)",
    response_model=Envelope[Published],
)
def publish_context(request: Request, _: Runner, task_id: TaskId, body: Publish) -> Answer:
    """Every key is checked against the agent's ``context_write`` globs here too (422
    naming the key) before anything is stored; the entries land in one transaction.
    Publishing the same entries again only rewrites them (a retry after a lost answer
    is harmless)."""
    store, task = _leased_task(request, task_id, body.fencing_token)
    write = _agent(request, task).context_write
    for key, value in body.entries.items():
        try:
            check_key(key)
            encode_value(key, value)
        except ContextError as exc:
            raise ApiError(422, f"context key {key!r}: {exc.message}") from None
        if not allowed(key, write):
            raise ApiError(
                422,
                f"agent {task.agent} may not publish context key {key!r} "
                f"(context_write = {write!r})",
            )
    try:
        _context_store(request, store).set_many(body.entries, task_id=task_id, ttl=body.ttl_seconds)
    except ContextError as exc:
        raise ApiError(422, exc.message) from None
    return ok({"published": sorted(body.entries)})
