"""The vault: secrets encrypted at rest with the master key, handed out by name.

The master key is one or more Fernet keys: from ``CAPATAZ_MASTER_KEY`` (comma
separated, newest first) or from ``.capataz/master.key`` (one per line, newest first),
which is created on first use with mode 0600 and refused when anyone else may read it.
Every value is encrypted with the newest key and decrypted with whichever key opens it
(MultiFernet), which is what makes rotation safe to interrupt: while it runs the key
file holds the new key *and* the old ones, so every row opens whichever it was
encrypted with, and only once every row is rewritten are the old keys dropped.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from capataz import redaction
from capataz.errors import CapatazError
from capataz.names import check_secret_name
from capataz.store import Store

__all__ = [
    "KEY_ENV",
    "KEY_FILE",
    "MasterKey",
    "SecretInfo",
    "Vault",
    "VaultError",
    "install_redaction",
    "rotate_master_key",
]

KEY_ENV = "CAPATAZ_MASTER_KEY"
KEY_FILE = "master.key"


class VaultError(CapatazError):
    """The master key is missing, unsafe or wrong, or a secret is unknown."""


@dataclass(frozen=True)
class MasterKey:
    keys: tuple[bytes, ...]  # newest first
    source: str  # where it came from, for messages ("CAPATAZ_MASTER_KEY" or a path)
    path: Path | None = None  # the key file, when the key lives in one

    @classmethod
    def load(cls, state_dir: Path, *, create: bool = True) -> MasterKey:
        """The key from the environment, else from the key file (made when missing and
        ``create``)."""
        from_env = os.environ.get(KEY_ENV, "").strip()
        if from_env:
            return cls(_parse(from_env.split(","), KEY_ENV), KEY_ENV)
        path = state_dir / KEY_FILE
        if not path.exists():
            if not create:
                raise VaultError(
                    f"no master key ({KEY_ENV} is not set and {path} does not exist)",
                    fix=f"set {KEY_ENV}, or run `capataz secret set NAME` to create one",
                )
            write_key_file(path, [Fernet.generate_key()])
        return cls(_parse(read_key_file(path), str(path)), str(path), path)

    def fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(key) for key in self.keys])


def _parse(lines: Iterable[str], source: str) -> tuple[bytes, ...]:
    keys = tuple(line.strip().encode() for line in lines if line.strip())
    if not keys:
        raise VaultError(f"the master key in {source} is empty", fix="restore the key")
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise VaultError(
                f"the master key in {source} is not a Fernet key",
                fix="a key is 32 bytes in URL-safe base64 (44 characters); restore the right one",
            ) from None
    return keys


def read_key_file(path: Path) -> list[str]:
    """The key file's lines, after checking that nobody else can read or change it."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise VaultError(f"{path} is not a regular file", fix="replace it with the key file")
    if info.st_mode & 0o077:
        raise VaultError(
            f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):04o})",
            fix=f"chmod 600 {path}",
        )
    if info.st_uid != os.geteuid():
        raise VaultError(
            f"{path} belongs to another user (uid {info.st_uid})",
            fix=f"chown {os.geteuid()} {path}",
        )
    return path.read_text(encoding="ascii").splitlines()


def write_key_file(path: Path, keys: Iterable[bytes]) -> None:
    """Write the key file atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"".join(key + b"\n" for key in keys))
        os.fsync(fd)
    finally:
        os.close(fd)
    temporary.replace(path)


@dataclass(frozen=True)
class SecretInfo:
    """What `capataz secret list` shows: never the value."""

    name: str
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
    updated_by: str


class Vault:
    """Secrets by name over the store, encrypted with the master key."""

    def __init__(self, store: Store, key: MasterKey) -> None:
        self.store = store
        self.key = key
        self._fernet = key.fernet()

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str, what: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise VaultError(
                f"the master key from {self.key.source} does not open {what}",
                fix="use the key the vault was written with (check "
                f"{KEY_ENV} or the key file); capataz never guesses",
            ) from None

    def set(self, name: str, value: str, *, actor: str = "cli") -> bool:
        """Store ``value`` under ``name``; True when the secret is new."""
        check_secret_name(name)
        if not value:
            raise VaultError(f"empty value for {name}", fix="provide the secret's value")
        if len(value) < redaction.MIN_LENGTH:
            raise VaultError(
                f"the value of {name} is shorter than {redaction.MIN_LENGTH} characters",
                fix="capataz masks secrets in every log and could not mask one this short "
                "without shredding the logs; use the real credential",
            )
        redaction.add({name: value})  # masked from now on in this process
        return self.store.secrets.put(name, self.encrypt(value), actor=actor)

    def get(self, name: str) -> str:
        rows = self.store.secrets.rows([name])
        if not rows:
            raise VaultError(f"no secret {name}", fix=f"`capataz secret set {name}` stores it")
        return self.decrypt(rows[0].ciphertext, f"secret {name}")

    def values(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Decrypted values by name (all, or those of ``names`` that exist)."""
        rows = self.store.secrets.rows(names)
        return {row.name: self.decrypt(row.ciphertext, f"secret {row.name}") for row in rows}

    def names(self) -> list[SecretInfo]:
        return [
            SecretInfo(r.name, r.created_at, r.updated_at, r.rotated_at, r.updated_by)
            for r in self.store.secrets.rows()
        ]

    def remove(self, name: str, *, actor: str = "cli") -> None:
        if not self.store.secrets.delete(name, actor=actor):
            raise VaultError(f"no secret {name}", fix="`capataz secret list` shows the names")

    def check(self) -> None:
        """Fail now, with the clear message, if the key does not open the vault."""
        rows = self.store.secrets.rows()
        if rows:
            self.decrypt(rows[0].ciphertext, f"secret {rows[0].name}")

    def reencrypt_all(self, *, actor: str = "cli") -> int:
        """Rewrite every secret and context entry under the newest key (MultiFernet's
        rotate: decrypt with any key, encrypt with the first)."""
        rewritten: dict[str, str] = {}
        for row in self.store.secrets.rows():
            rewritten[row.name] = self._rotate(row.ciphertext, f"secret {row.name}")
        count = self.store.secrets.replace_ciphertexts(rewritten, actor=actor)
        context = {
            key: self._rotate(ciphertext, f"context entry {key}")
            for key, ciphertext in self.store.context.all_ciphertexts().items()
        }
        return count + self.store.context.replace_ciphertexts(context, actor=actor)

    def _rotate(self, ciphertext: str, what: str) -> str:
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise VaultError(
                f"the master key from {self.key.source} does not open {what}",
                fix="rotation needs the old key too: keep it in the key file or in "
                f"{KEY_ENV} after the new one",
            ) from None


def install_redaction(store: Store, state_dir: Path, *, strict: bool = False) -> bool:
    """Mask the vault's values in everything this process writes (see
    :mod:`capataz.redaction`). Without a master key there is nothing this process could
    have decrypted, so nothing to mask: False. A key that does not open the vault is an
    error when ``strict`` (processes that run agents), else a warning."""
    try:
        key = MasterKey.load(state_dir, create=False)
    except VaultError as exc:
        if strict and store.secrets.rows():
            raise
        if "no master key" not in exc.message:
            logging.getLogger("capataz.secrets.vault").warning("secrets cannot be masked: %s", exc)
        redaction.install(None)
        return False
    vault = Vault(store, key)
    try:
        redaction.install(vault.values)
    except VaultError:
        if strict:
            raise
        logging.getLogger("capataz.secrets.vault").warning("secrets cannot be masked: wrong key")
        redaction.install(None)
        return False
    return True


def rotate_master_key(store: Store, state_dir: Path, *, actor: str = "cli") -> tuple[int, str]:
    """Re-encrypt everything under a new key. With a key file: a new key is generated
    and put first (old keys kept), everything is rewritten, then the old keys are
    dropped; interrupted at any point, the file still opens every row. With
    ``CAPATAZ_MASTER_KEY``: the operator puts the new key first in the variable, and
    everything is rewritten under it. Returns (rows rewritten, key source)."""
    key = MasterKey.load(state_dir, create=False)
    if key.path is None:
        Vault(store, key).check()
        return Vault(store, key).reencrypt_all(actor=actor), key.source
    Vault(store, key).check()
    new = Fernet.generate_key()
    write_key_file(key.path, [new, *key.keys])
    widened = MasterKey((new, *key.keys), key.source, key.path)
    count = Vault(store, widened).reencrypt_all(actor=actor)
    write_key_file(key.path, [new])
    return count, key.source
