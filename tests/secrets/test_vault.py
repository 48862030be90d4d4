"""The vault: encrypted at rest, wrong keys refused clearly, rotation safe to interrupt."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from capataz.secrets.vault import KEY_ENV, KEY_FILE, MasterKey, Vault, VaultError, rotate_master_key
from capataz.store import Store

PLAINTEXTS = {"OPENAI_API_KEY": "sk-test-plaintext-4f1c9a", "DB_PASSWORD": "pw-9d2e-plaintext"}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(KEY_ENV, raising=False)
    directory = tmp_path / ".capataz"
    directory.mkdir()
    return directory


@pytest.fixture
def store(state: Path) -> Store:
    opened = Store.open(f"sqlite:///{state / 'capataz.db'}")
    yield opened  # type: ignore[misc]
    opened.close()


def _filled(store: Store, state: Path) -> Vault:
    vault = Vault(store, MasterKey.load(state))
    for name, value in PLAINTEXTS.items():
        vault.set(name, value, actor="test")
    return vault


def test_values_are_encrypted_at_rest_everywhere_under_the_state_dir(
    store: Store, state: Path
) -> None:
    vault = _filled(store, state)
    assert vault.values() == PLAINTEXTS
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "capataz.db-wal" for p in files) or any(
        p.name == "capataz.db" for p in files
    )
    for path in files:
        raw = path.read_bytes()
        for value in PLAINTEXTS.values():
            assert value.encode() not in raw, path


def test_key_file_is_created_0600_and_a_readable_one_is_refused(state: Path) -> None:
    key = MasterKey.load(state)
    assert key.path == state / KEY_FILE
    assert stat.S_IMODE(os.stat(state / KEY_FILE).st_mode) == 0o600
    os.chmod(state / KEY_FILE, 0o644)
    with pytest.raises(VaultError) as refused:
        MasterKey.load(state)
    assert f"chmod 600 {state / KEY_FILE}" in str(refused.value)


def test_a_wrong_key_is_a_clear_error_never_garbage(
    store: Store, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filled(store, state)
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    vault = Vault(store, MasterKey.load(state))
    with pytest.raises(VaultError, match="does not open secret"):
        vault.check()
    with pytest.raises(VaultError, match="CAPATAZ_MASTER_KEY"):
        vault.values()


def test_rotation_rewrites_every_ciphertext_under_one_new_key(store: Store, state: Path) -> None:
    _filled(store, state)
    old_key = (state / KEY_FILE).read_text().split()
    before = {row.name: row.ciphertext for row in store.secrets.rows()}
    count, source = rotate_master_key(store, state, actor="test")
    assert count == len(PLAINTEXTS)
    assert source == str(state / KEY_FILE)
    new_key = (state / KEY_FILE).read_text().split()
    assert len(new_key) == 1 and new_key != old_key
    after = {row.name: row for row in store.secrets.rows()}
    assert all(after[name].ciphertext != before[name] for name in before)
    assert all(row.rotated_at is not None for row in after.values())
    assert Vault(store, MasterKey.load(state)).values() == PLAINTEXTS
    with pytest.raises(VaultError):  # the old key alone no longer opens anything
        Vault(store, MasterKey((old_key[0].encode(),), "old")).check()


def test_an_interrupted_rotation_loses_nothing_and_a_second_one_completes(
    store: Store, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filled(store, state)

    def crash(*_args: object, **_kwargs: object) -> int:
        raise KeyboardInterrupt  # the machine went away mid-rotation

    with monkeypatch.context() as patch:
        patch.setattr(store.secrets, "replace_ciphertexts", crash)
        with pytest.raises(KeyboardInterrupt):
            rotate_master_key(store, state, actor="test")
    assert len((state / KEY_FILE).read_text().split()) == 2  # widened: new and old
    assert Vault(store, MasterKey.load(state)).values() == PLAINTEXTS
    count, _ = rotate_master_key(store, state, actor="test")
    assert count == len(PLAINTEXTS)
    assert len((state / KEY_FILE).read_text().split()) == 1
    assert Vault(store, MasterKey.load(state)).values() == PLAINTEXTS
