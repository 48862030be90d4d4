"""Credential requests over HTTP: the runbook's ``GET /ops/requests`` and the panel's
Setup, ``POST /ops/requests/{id}/value`` (docs/runbook.md, Credentials).

A value travels once, in the POST body; it is encrypted into the vault with the
server's master key ($CAPATAZ_MASTER_KEY, or the key file in the served repository's
``.capataz/``) and never returned, logged or echoed in an error: the answer is the
request with its new status. Reading the list needs no key (names are not secret)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from capataz.agents.presets import with_presets
from capataz.api.auth import Access, requires
from capataz.api.deps import Answer, config_of, ok, store_of
from capataz.api.errors import ApiError
from capataz.api.schemas import CredentialRequestOut
from capataz.runner.protocol import Envelope, TaskSecrets
from capataz.secrets.credentials import RequestState, needed_secrets, request_states
from capataz.secrets.vault import KEY_ENV, KEY_FILE, MasterKey, Vault, VaultError
from capataz.store import Store, TokenInfo

__all__ = ["router", "server_vault"]

router = APIRouter(tags=["requests"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
Operator = Annotated[TokenInfo, Depends(requires(Access.OPERATE))]
Runner = Annotated[TokenInfo, Depends(requires(Access.RUNNER))]
RequestId = Annotated[str, PathParam(max_length=64)]
TaskId = Annotated[str, PathParam(max_length=200)]


class Value(BaseModel):
    """The secret's value; 64 KiB is far above any API key or token."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=65_536)


def _states(request: Request) -> list[RequestState]:
    config = config_of(request)
    names = [r.secret for r in config.requests]
    provided = {row.name for row in store_of(request).secrets.rows(names)} if names else set()
    return request_states(config, provided)


def server_vault(request: Request, store: Store) -> Vault:
    """The vault under the server's master key, checked before anything is written: a
    wrong key answers 503 naming the fix, never a row under a second key. A key file is
    created only while the vault is empty (like `capataz secret set`)."""
    directory: Path | None = getattr(request.app.state, "state_dir", None)
    if directory is None and not os.environ.get(KEY_ENV, "").strip():
        raise ApiError(
            503,
            f"the vault is unavailable: the server has no master key — set {KEY_ENV} for "
            "`capataz serve`, or serve a repository whose .capataz/ holds the key file",
            code="vault_unavailable",
        )
    try:
        if directory is None:
            key = MasterKey.load(Path(), create=False)  # from the variable
        else:
            empty = not store.secrets.rows() and not (directory / KEY_FILE).exists()
            key = MasterKey.load(directory, create=empty)
        vault = Vault(store, key)
        vault.check()
    except VaultError as exc:
        raise ApiError(503, f"the vault is unavailable: {exc}", code="vault_unavailable") from None
    return vault


@router.get(
    "/ops/requests",
    summary="Credential requests and their status (WAITING/PROVIDED)",
    response_model=Envelope[list[CredentialRequestOut]],
)
def list_requests(request: Request, _: Reader) -> Answer:
    return ok([state.as_json() for state in _states(request)])


@router.post(
    "/ops/requests/{request_id}/value",
    summary="Provide a request's secret (stored encrypted; never returned)",
    response_model=Envelope[CredentialRequestOut],
)
def provide_value(request: Request, token: Operator, request_id: RequestId, body: Value) -> Answer:
    declared = next((r for r in config_of(request).requests if r.id == request_id), None)
    if declared is None:
        raise ApiError(404, f"no credential request {request_id}")
    store = store_of(request)
    server_vault(request, store).set(declared.secret, body.value, actor=f"api:{token.name}")
    state = next(s for s in _states(request) if s.id == request_id)
    return ok(state.as_json())


@router.get(
    "/runner/tasks/{task_id}/secrets",
    summary="The claimed task's secrets, for a remote runner holding its lease",
    tags=["runner"],
    response_model=Envelope[TaskSecrets],
)
def task_secrets(
    request: Request,
    _: Runner,
    task_id: TaskId,
    fencing_token: Annotated[int, Query(alias="token")],
) -> Answer:
    """Values of the secrets the task's agent and the gates may see, read from the
    server's own configuration (a runner cannot ask for more), and only while
    ``token`` is the task's current lease: a stale or foreign runner gets 409. The
    names of secrets the vault lacks are simply absent; the runner then waits."""
    store = store_of(request)
    task = store.tasks.get(task_id)  # NoSuchTaskError: 404 (api/errors.py)
    if not store.leases.is_current(task_id, fencing_token):
        raise ApiError(409, f"task {task_id} is not held under fencing token {fencing_token}")
    names = needed_secrets(with_presets(config_of(request)), task.agent)  # a preset's key too
    vault_has = bool(names) and bool(store.secrets.rows(names))
    values = server_vault(request, store).values(names) if vault_has else {}
    # The one answer that must carry values: built without ok(), which masks them.
    return {"ok": True, "data": {"values": values}}
