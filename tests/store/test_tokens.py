"""API tokens: shown once, stored as a hash, refused once revoked."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from capataz.errors import CapatazError
from capataz.store import Store
from capataz.store.schema import api_tokens


def test_a_token_is_stored_only_as_its_hash(store: Store) -> None:
    token = store.tokens.create("operator", "ci")
    assert token.startswith("cap_")
    assert len(token) > 40
    with store.engine.connect() as conn:
        (stored,) = conn.execute(sa.select(api_tokens.c.hash)).scalars().all()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(store.tokens.list())


def test_authenticate_knows_the_role_and_refuses_revoked_tokens(store: Store) -> None:
    token = store.tokens.create("viewer")
    other = store.tokens.create("admin", "ops")
    info = store.tokens.authenticate(token)
    assert info is not None
    assert (info.role, info.name) == ("viewer", "viewer")
    assert store.tokens.authenticate(token + "x") is None
    assert store.tokens.authenticate("") is None
    (listed, _) = store.tokens.list()
    assert listed.last_used_at is not None
    revoked = store.tokens.revoke(info.id)
    assert revoked.revoked_at is not None
    assert store.tokens.revoke(info.id).revoked_at == revoked.revoked_at  # twice is harmless
    assert store.tokens.authenticate(token) is None
    assert store.tokens.authenticate(other) is not None


def test_unknown_roles_and_ids_are_refused(store: Store) -> None:
    with pytest.raises(CapatazError, match="unknown role 'root'"):
        store.tokens.create("root")
    with pytest.raises(CapatazError, match="no token 42"):
        store.tokens.revoke(42)


def test_forgetting_a_runner_needs_it_offline(store: Store) -> None:
    runner = store.runners.register("r", hostname="h", pid=1, concurrency=1)
    with pytest.raises(CapatazError, match="is online"):
        store.runners.forget(runner)
    store.runners.mark_stopped(runner)
    store.runners.forget(runner)
    assert store.runners.list() == []
    with pytest.raises(CapatazError, match="no runner"):
        store.runners.forget(runner)
