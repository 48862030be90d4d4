"""``store.secrets``: the vault's encrypted secrets, and the rotation routine it shares
with the context store's rows (``_context``).

The store never sees a plaintext: :mod:`capataz.secrets.vault` encrypts before it calls here
and decrypts what it reads. Audit entries name secrets, never their values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from capataz.store._base import StoreBase
from capataz.store.schema import secrets

__all__ = ["Ciphertexts", "SecretRow", "Secrets"]


@dataclass(frozen=True)
class SecretRow:
    name: str
    ciphertext: str
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
    updated_by: str


class Ciphertexts(StoreBase):
    """A facade over rows that hold ciphertexts under a key: what key rotation needs
    from each (secrets, context entries), written once."""

    def _replace(
        self,
        table: sa.Table,
        key: sa.ColumnElement[str],
        rewritten: Mapping[str, str],
        *,
        actor: str,
        subject: str,
        stamp_rotation: bool,
    ) -> int:
        """Swap in re-encrypted values, all in one transaction, so a rotation
        interrupted before commit changes nothing and one after it is complete; audited
        as ``vault.rotated`` of ``subject`` ("secrets" or "context")."""
        now = self._now()
        values: dict[str, Any] = {"ciphertext": sa.bindparam("ciphertext_")}
        if stamp_rotation:
            values["rotated_at"] = sa.bindparam("now_")
        stmt = sa.update(table).where(key == sa.bindparam("key_")).values(**values)
        params = [{"key_": k, "ciphertext_": v, "now_": now} for k, v in rewritten.items()]
        with self._write() as conn:
            if params:
                conn.execute(stmt, params)
            self._audit(conn, actor, "vault.rotated", subject, count=len(params))
        return len(params)


class Secrets(Ciphertexts):
    """The vault's rows: a name, its ciphertext, who set it and when."""

    def put(self, name: str, ciphertext: str, *, actor: str) -> bool:
        """Store (or replace) a secret's ciphertext; True when it is new."""
        now = self._now()
        with self._write() as conn:
            updated = conn.execute(
                sa.update(secrets)
                .where(secrets.c.name == name)
                .values(ciphertext=ciphertext, updated_at=now, updated_by=actor)
            ).rowcount
            if not updated:
                conn.execute(
                    sa.insert(secrets).values(
                        name=name,
                        ciphertext=ciphertext,
                        created_at=now,
                        updated_at=now,
                        updated_by=actor,
                    )
                )
            self._audit(conn, actor, "secret.set", name, new=not updated)
        return not updated

    def rows(self, names: Iterable[str] | None = None) -> list[SecretRow]:
        query = sa.select(secrets).order_by(secrets.c.name)
        if names is not None:
            query = query.where(secrets.c.name.in_(sorted(set(names))))
        with self._read() as conn:
            return [SecretRow(**row._asdict()) for row in conn.execute(query)]

    def delete(self, name: str, *, actor: str) -> bool:
        with self._write() as conn:
            gone = conn.execute(sa.delete(secrets).where(secrets.c.name == name)).rowcount
            if gone:
                self._audit(conn, actor, "secret.removed", name)
        return bool(gone)

    def replace_ciphertexts(self, rewritten: Mapping[str, str], *, actor: str) -> int:
        """Key rotation of the vault: swap in every re-encrypted secret at once (see
        :meth:`Ciphertexts._replace`); stamps ``rotated_at``."""
        return self._replace(
            secrets, secrets.c.name, rewritten, actor=actor, subject="secrets", stamp_rotation=True
        )
