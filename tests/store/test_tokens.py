"""API tokens: shown once, stored as a hash, refused once revoked."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from capataz.errors import CapatazError
from capataz.store import Store
from capataz.store.schema import api_tokens


def test_a_token_is_stored_only_as_its_hash(store: Store) -> None:
    token = store.create_token("operator", "ci")
    assert token.startswith("cap_")
    assert len(token) > 40
    with store.engine.connect() as conn:
        (stored,) = conn.execute(sa.select(api_tokens.c.hash)).scalars().all()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(store.list_tokens())


def test_authenticate_knows_the_role_and_refuses_revoked_tokens(store: Store) -> None:
    token = store.create_token("viewer")
    other = store.create_token("admin", "ops")
    info = store.authenticate(token)
    assert info is not None
    assert (info.role, info.name) == ("viewer", "viewer")
    assert store.authenticate(token + "x") is None
    assert store.authenticate("") is None
    (listed, _) = store.list_tokens()
    assert listed.last_used_at is not None
    revoked = store.revoke_token(info.id)
    assert revoked.revoked_at is not None
    assert store.revoke_token(info.id).revoked_at == revoked.revoked_at  # twice is harmless
    assert store.authenticate(token) is None
    assert store.authenticate(other) is not None


def test_unknown_roles_and_ids_are_refused(store: Store) -> None:
    with pytest.raises(CapatazError, match="unknown role 'root'"):
        store.create_token("root")
    with pytest.raises(CapatazError, match="no token 42"):
        store.revoke_token(42)


def test_forgetting_a_runner_needs_it_offline(store: Store) -> None:
    runner = store.register_runner("r", hostname="h", pid=1, concurrency=1)
    with pytest.raises(CapatazError, match="is online"):
        store.forget_runner(runner)
    store.runner_stopped(runner)
    store.forget_runner(runner)
    assert store.list_runners() == []
    with pytest.raises(CapatazError, match="no runner"):
        store.forget_runner(runner)
