"""``store.tokens``: bearer tokens of the HTTP API.

A token is shown once, when created, and only its SHA-256 is stored. Authenticating
hashes the presented token and looks the hash up: the database compares digests, not
secrets, so the lookup's timing says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from capataz.errors import CapatazError
from capataz.store._base import StoreBase
from capataz.store.records import TokenInfo
from capataz.store.schema import api_tokens

__all__ = ["TOKEN_PREFIX", "Role", "Tokens", "hash_token"]

TOKEN_PREFIX = "cap_"  # noqa: S105  (a prefix, not a secret)
# last_used_at is refreshed at most this often, so reads do not become writes.
_TOUCH_SECONDS = 30.0


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    RUNNER = "runner"
    VIEWER = "viewer"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(row: sa.Row[tuple[object, ...]]) -> TokenInfo:
    return TokenInfo(
        id=int(row.id),
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class Tokens(StoreBase):
    """Who may call the API, in which role; only digests are stored."""

    def create(self, role: str, name: str = "", *, actor: str = "capataz") -> str:
        """Create a token for ``role`` and return it; this is the only time it exists
        outside the caller's hands."""
        try:
            chosen = Role(role.strip().lower())
        except ValueError:
            raise CapatazError(
                f"unknown role {role!r}", fix=f"use one of {', '.join(r.value for r in Role)}"
            ) from None
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        with self._write() as conn:
            token_id = conn.execute(
                sa.insert(api_tokens)
                .values(
                    name=name or chosen.value,
                    role=chosen.value,
                    hash=hash_token(token),
                    created_at=now,
                )
                .returning(api_tokens.c.id)
            ).scalar_one()
            self._audit(conn, actor, "token.created", str(token_id), role=chosen.value, name=name)
        return token

    def revoke(self, token_id: int, *, actor: str = "capataz") -> TokenInfo:
        """Revoke a token at once; revoking twice keeps the first time."""
        now = self._now()
        with self._write() as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
            if row is None:
                raise CapatazError(
                    f"no token {token_id}", fix="`capataz token list` shows the token ids"
                )
            if row.revoked_at is None:
                conn.execute(
                    sa.update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=now)
                )
                self._audit(conn, actor, "token.revoked", str(token_id))
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).one()
        return _info(row)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The token's owner, or None when it is unknown or revoked."""
        digest = hash_token(token)
        with self._read() as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        now = self._now()
        if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=_TOUCH_SECONDS):
            with self._write() as conn:
                conn.execute(
                    sa.update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=now)
                )
        return _info(row)

    def revocations(self) -> tuple[int, datetime | None]:
        """How many tokens are revoked and the latest revocation: what changes when any
        token is revoked, so a server that remembers who tokens are (the API's
        ``TokenCache``) can ask this once a second instead of reading every token's
        row on every request."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(api_tokens.c.revoked_at), sa.func.max(api_tokens.c.revoked_at)
                )
            ).one()
        return int(row[0]), row[1]

    # Last: a method named ``list`` would shadow the builtin in annotations below it.
    def list(self) -> list[TokenInfo]:
        with self._read() as conn:
            rows = conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id)).all()
        return [_info(row) for row in rows]
