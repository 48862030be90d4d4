"""Delivery of vault secrets to sandboxes: each agent and gate gets exactly the secrets
its configuration lists, and nothing else does.

The pipeline asks once per run (:meth:`SecretDelivery.prepare`), before it touches
anything: a task whose agent or gates need a secret the vault lacks is not started
(:class:`~capataz.credentials.CredentialsWaitingError` names the request). The values
are then held in memory for the run and added to each sandbox spec: as environment
variables (the environment never goes on bwrap's command line), or for agents with
``secrets_as = "files"`` as files the backend puts on a private tmpfs. Projects that
use no secrets never open the vault, so they never need a master key.

Where values come from is a :data:`SecretSource`: by default the local vault (the
repository's store and master key); a remote runner, which has no database, passes
one that asks the control plane for the claimed task's secrets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from capataz import redaction
from capataz.config import AgentConfig, Config, GateConfig
from capataz.sandbox.base import SandboxSpec
from capataz.secrets.credentials import CredentialsWaitingError, blocking_requests, needed_secrets
from capataz.statedir import state_dir

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported only when a secret is needed
    from capataz.store import Store

__all__ = ["SecretDelivery", "SecretSource", "queue_source", "vault_source"]

SecretSource = Callable[[Sequence[str]], Mapping[str, str]]
"""Given secret names, the values of those the vault has (missing ones left out)."""


def _from_store(store: Store, repo_root: Path, names: Sequence[str]) -> Mapping[str, str]:
    """The master key is loaded only when one of the names exists, and never created
    here (a runner must not mint a key the vault was not written with)."""
    from capataz.secrets.vault import MasterKey, Vault

    if not store.secrets.rows(names):
        return {}
    return Vault(store, MasterKey.load(state_dir(repo_root), create=False)).values(names)


def vault_source(repo_root: Path) -> SecretSource:
    """Read from the repository's own vault (its store: $CAPATAZ_DATABASE_URL or
    ``.capataz/capataz.db``), opened only when asked."""

    def fetch(names: Sequence[str]) -> Mapping[str, str]:
        from capataz.secrets.vault import VaultError
        from capataz.store import Store, StoreError, database_url

        try:
            store = Store.open(database_url(repo_root))
        except StoreError as exc:  # unreachable, or not a database capataz can open
            raise VaultError(
                f"the vault's database cannot be opened ({type(exc).__name__})",
                fix="check CAPATAZ_DATABASE_URL and that the database is running",
            ) from None
        try:
            return _from_store(store, repo_root, names)
        finally:
            store.close()

    return fetch


class _TaskSecrets(Protocol):
    def task_secrets(self, task_id: str, fencing_token: int) -> Mapping[str, str]: ...


def queue_source(
    queue: object, repo_root: Path, task_id: str, fencing_token: int
) -> SecretSource | None:
    """For a runner: its own database when it works on one (the vault lives there),
    the control plane when it speaks HTTP (the queue has ``task_secrets``: the server
    picks the task's secrets and hands them out under the current lease only), else
    None (the repository's vault)."""
    from capataz.store import Store  # a runner has it loaded already

    if isinstance(queue, Store):
        return lambda names: _from_store(queue, repo_root, names)
    if not hasattr(queue, "task_secrets"):
        return None
    remote = cast(_TaskSecrets, queue)

    def fetch(names: Sequence[str]) -> Mapping[str, str]:
        values = remote.task_secrets(task_id, fencing_token)
        return {name: values[name] for name in names if name in values}

    return fetch


class SecretDelivery:
    """The secrets of one run, fetched by :meth:`prepare`, handed out per sandbox."""

    def __init__(self, config: Config, repo_root: Path, source: SecretSource | None = None):
        self.config = config
        self._source = source or vault_source(repo_root)
        self._values: dict[str, str] = {}

    def prepare(self, agent: str) -> None:
        """Fetch what a task run by ``agent`` needs (its own secrets and the gates');
        CredentialsWaitingError when the vault lacks one. Free when none is needed."""
        self._values = {}
        names = needed_secrets(self.config, agent)
        if not names:
            return
        values = dict(self._source(names))
        blockers = blocking_requests(self.config, agent, values.keys())
        if blockers:
            raise CredentialsWaitingError(blockers)
        self._values = {name: values[name] for name in names}
        # Whatever hands a secret out masks it from then on, in everything this
        # process writes (sandbox output, run log, progress files, store, events).
        redaction.add(self._values)

    def values(self) -> dict[str, str]:
        """This run's secret values (what a redactor must hide from its output)."""
        return dict(self._values)

    def for_agent(self, agent: AgentConfig, spec: SandboxSpec) -> SandboxSpec:
        """``spec`` with the agent's secrets: as variables, or as files."""
        chosen = {name: self._value(name) for name in agent.secrets}
        if not chosen:
            return spec
        if agent.secrets_as == "files":
            return dataclasses.replace(spec, secret_files={**spec.secret_files, **chosen})
        return dataclasses.replace(spec, env={**spec.env, **chosen})

    def for_gate(self, gate: GateConfig, spec: SandboxSpec) -> SandboxSpec:
        """``spec`` with the gate's secrets (as variables); none unless it lists some."""
        if not gate.secrets:
            return spec
        chosen = {name: self._value(name) for name in gate.secrets}
        return dataclasses.replace(spec, env={**spec.env, **chosen})

    def _value(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:  # prepare() was not called for this agent: a bug, not a user error
            raise RuntimeError(f"secret {name} was not prepared for this run") from None
