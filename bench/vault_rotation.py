"""Master key rotation: the time to re-encrypt 1,000 secrets (and 1,000 context
entries) under a new key with ``rotate_master_key``, on the embedded SQLite store with
the key in ``.capataz/master.key``. Also: setting the secrets one by one, and reading
them all back (what a runner does before each run that needs secrets). Prints figures;
asserts nothing.

    python bench/vault_rotation.py [--secrets 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from capataz.context.store import ContextStore
from capataz.secrets.vault import KEY_ENV, MasterKey, Vault, rotate_master_key
from capataz.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secrets", type=int, default=1000)
    args = parser.parse_args()
    os.environ.pop(KEY_ENV, None)
    with tempfile.TemporaryDirectory(prefix="capataz-bench-") as tmp:
        state = Path(tmp) / ".capataz"
        store = Store.open(f"sqlite:///{tmp}/capataz.db")
        vault = Vault(store, MasterKey.load(state))
        started = time.perf_counter()
        for i in range(args.secrets):
            vault.set(f"SECRET_{i:05}", f"value-{i:05}-{os.urandom(12).hex()}", actor="bench")
        set_seconds = time.perf_counter() - started
        context = ContextStore(store, vault)
        context.set_many({f"ctx.{i:05}": {"n": i} for i in range(args.secrets)})
        started = time.perf_counter()
        values = vault.values()
        read_seconds = time.perf_counter() - started
        before = {row.name: row.ciphertext for row in store.secrets.rows()}
        started = time.perf_counter()
        count, _ = rotate_master_key(store, state, actor="bench")
        rotate_seconds = time.perf_counter() - started
        after = {row.name: row.ciphertext for row in store.secrets.rows()}
        reopened = Vault(store, MasterKey.load(state))
        intact = reopened.values() == values
        changed = sum(before[name] != after[name] for name in before)
        store.close()
    print(f"vault with {args.secrets} secrets and {args.secrets} context entries (SQLite)")
    each_ms = set_seconds / args.secrets * 1000
    print(f"  set one by one        {set_seconds:7.2f} s   ({each_ms:.2f} ms each)")
    print(f"  read all              {read_seconds * 1000:7.1f} ms")
    print(f"  rotate-key            {rotate_seconds:7.2f} s   ({count} rows re-encrypted)")
    print(f"  every value intact    {intact}; ciphertexts changed {changed}/{len(before)}")


if __name__ == "__main__":
    main()
