"""The context store: small JSON values shared between tasks, encrypted at rest.

A task publishes results (a version it built, a URL it deployed, a schema it chose) and
the tasks that depend on it receive them. Values are JSON-encoded and then encrypted
with the vault's master key before the store ever sees them, so the database (and any
backup of it) holds ciphertext only; keys, the publishing task and the times stay
readable so that ``capataz context list`` never needs to decrypt. An entry may expire:
the store's query hides expired rows, so an expired value is gone for every reader at
once, without a sweeper.

Reads are the hot path (every dependent run, every ``capataz context get``): one indexed
primary-key lookup through the store's read connection plus one Fernet decryption.
``bench/context_reads.py`` measures them."""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from capataz.config import AgentConfig
from capataz.context.flow import ContextLink, Publication
from capataz.context.keys import ContextError, NoContextEntry, allowed, check_key, encode_value
from capataz.secrets.vault import MasterKey, Vault
from capataz.statedir import state_dir
from capataz.store import Store

__all__ = [
    "ContextError",
    "ContextInfo",
    "ContextStore",
    "NoContextEntry",
    "RemoteContextLink",
    "context_link",
    "open_context_store",
]


@dataclass(frozen=True)
class ContextInfo:
    """What ``capataz context list`` shows without decrypting anything."""

    key: str
    task_id: str | None
    updated_at: datetime
    expires_at: datetime | None


class ContextStore:
    """Context entries by key over the :class:`Store`, encrypted with the vault.

    ``vault`` may be a factory: the master key is then loaded (and its file created on
    first use) only when a value is actually encrypted or decrypted, so a runner whose
    tasks never share context never touches the key.

    Decrypted texts are kept by ciphertext (``cache_size`` of them, 0 for none): a
    Fernet decryption costs more than the query, and a ciphertext never changes
    meaning (a new value is a new ciphertext, a key rotation too), so the cache cannot
    serve a stale value; only the JSON decoding is repeated, so every caller gets its
    own copy."""

    def __init__(
        self, store: Store, vault: Vault | Callable[[], Vault], *, cache_size: int = 4096
    ) -> None:
        self.store = store
        self.cache_size = cache_size
        self._plain: dict[str, str] = {}
        self._lock = threading.Lock()
        self._vault = vault if isinstance(vault, Vault) else None
        self._make_vault = None if isinstance(vault, Vault) else vault

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            assert self._make_vault is not None
            self._vault = self._make_vault()
        return self._vault

    def get(self, key: str) -> Any:
        """The value of ``key``; :class:`NoContextEntry` when it is unknown or expired."""
        return self.entry(key)[1]

    def entry(self, key: str) -> tuple[ContextInfo, Any]:
        """An entry's metadata and value (``capataz context get --json``)."""
        row = self.store.context.entry(check_key(key))
        if row is None:
            raise NoContextEntry(key)
        info = ContextInfo(row.key, row.task_id, row.updated_at, row.expires_at)
        return info, self._decode(row.key, row.ciphertext)

    def set(
        self,
        key: str,
        value: Any,
        *,
        task_id: str | None = None,
        ttl: float | timedelta | None = None,
    ) -> None:
        """Store (or replace) one entry; ``ttl`` (seconds) makes it expire."""
        self.set_many({key: value}, task_id=task_id, ttl=ttl)

    def set_many(
        self,
        entries: Mapping[str, Any],
        *,
        task_id: str | None = None,
        ttl: float | timedelta | None = None,
    ) -> None:
        """Store several entries in one transaction (a task's whole publication lands
        together or not at all). Every key and value is checked before anything is
        written."""
        lifetime = ttl if isinstance(ttl, timedelta) or ttl is None else timedelta(seconds=ttl)
        if lifetime is not None and lifetime <= timedelta(0):
            raise ContextError("a context TTL must be positive", fix="use e.g. 30m or 1h")
        encoded = {check_key(key): encode_value(key, value) for key, value in entries.items()}
        if not encoded:
            return
        ciphertexts = {key: self.vault.encrypt(text) for key, text in encoded.items()}
        expires_at = self.store.clock() + lifetime if lifetime is not None else None
        self.store.context.put(ciphertexts, task_id=task_id, expires_at=expires_at)

    def remove(self, key: str, *, actor: str = "capataz") -> None:
        if not self.store.context.delete(check_key(key), actor=actor):
            raise NoContextEntry(key)

    def values(self, prefix: str | None = None) -> dict[str, Any]:
        """Every unexpired value (under ``prefix``), decrypted."""
        rows = self.store.context.rows(prefix=prefix)
        return {row.key: self._decode(row.key, row.ciphertext) for row in rows}

    def for_tasks(self, task_ids: Iterable[str], *, read: Sequence[str] = ("*",)) -> dict[str, Any]:
        """What a dependent receives: the unexpired entries published by ``task_ids``
        whose keys its agent may read (``context_read`` globs). Keys are unique in the
        store, so when two tasks published one key, the later one holds it."""
        ids = builtins.list(task_ids)
        if not ids:
            return {}
        rows = self.store.context.rows(task_ids=ids)
        return {
            row.key: self._decode(row.key, row.ciphertext) for row in rows if allowed(row.key, read)
        }

    def list(self, prefix: str | None = None) -> builtins.list[ContextInfo]:
        """Keys, publishers and times, by key; values stay encrypted."""
        return [
            ContextInfo(row.key, row.task_id, row.updated_at, row.expires_at)
            for row in self.store.context.rows(prefix=prefix)
        ]

    def _decode(self, key: str, ciphertext: str) -> Any:
        text = self._plain.get(ciphertext)
        if text is None:
            text = self.vault.decrypt(ciphertext, f"context entry {key}")
            if self.cache_size > 0:
                with self._lock:
                    while len(self._plain) >= self.cache_size:
                        del self._plain[next(iter(self._plain))]  # the oldest
                    self._plain[ciphertext] = text
        return json.loads(text)


def open_context_store(store: Store, repo_root: Path) -> ContextStore:
    """The context store of a repository: its master key (``CAPATAZ_MASTER_KEY`` or
    ``.capataz/master.key``, created on first use) is loaded lazily."""
    return ContextStore(store, lambda: Vault(store, MasterKey.load(state_dir(repo_root))))


class _RemoteContext(Protocol):
    """What a remote runner's queue offers (:class:`capataz.runner.remote.RemoteQueue`)."""

    def task_context(self, task_id: str, fencing_token: int) -> dict[str, Any]: ...

    def publish_context(
        self,
        task_id: str,
        fencing_token: int,
        entries: Mapping[str, Any],
        ttl_seconds: float | None = None,
    ) -> None: ...


Retry = Callable[[Callable[[], Any], str], Any]
"""Calls the queue, retrying through an outage (the runner's ``retry``)."""


class RemoteContextLink(ContextLink):
    """A remote runner's link: the control plane picks what the task receives (its own
    configuration's ``context_read``) and stores what it publishes (checking
    ``context_write`` again), both only under the run's lease. ``retry`` carries the
    calls through a server that is away for a while, like the runner's other calls."""

    def __init__(
        self, queue: _RemoteContext, fencing_token: int, retry: Retry | None = None
    ) -> None:
        super().__init__()
        self.queue = queue
        self.fencing_token = fencing_token
        self.retry: Retry = retry or (lambda call, _what: call())

    def inputs(self, task_id: str, agent: AgentConfig) -> dict[str, Any]:
        received: dict[str, Any] = self.retry(
            lambda: self.queue.task_context(task_id, self.fencing_token), "context"
        )
        return received

    @property
    def stores(self) -> bool:
        return True

    def save(self, task_id: str, publication: Publication) -> None:
        self.retry(
            lambda: self.queue.publish_context(
                task_id, self.fencing_token, publication.entries, publication.ttl
            ),
            "context publication",
        )


def context_link(
    queue: object,
    repo_root: Path,
    fencing_token: int | None = None,
    retry: Retry | None = None,
) -> ContextLink:
    """What a runner's runs use to receive and publish context: the store itself when
    the runner works on the database; the control plane's context routes when it
    works through one (the queue has ``task_context``, and the run's lease is
    ``fencing_token``); else nothing (``{context}`` is ``{}``, publications are
    reported but not stored)."""
    if isinstance(queue, Store):
        return ContextLink(open_context_store(queue, repo_root))
    if fencing_token is not None and hasattr(queue, "task_context"):
        return RemoteContextLink(cast(_RemoteContext, queue), fencing_token, retry)
    return ContextLink()
