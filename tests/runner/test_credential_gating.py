"""A runner does not start a task whose agent waits for a credential: it gives the task
back (attempt not counted) with a reason naming the request, and runs it once the
secret is in the vault. Real queue (SQLite and PostgreSQL), real sandbox."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import git
from tests.helpers import wait_for

from capataz.config import parse_config
from capataz.runner import Runner
from capataz.secrets.vault import KEY_ENV, MasterKey, Vault
from capataz.store import NewTask, Store, Task, TaskState
from capataz.workspace.repo import Repository

CONFIG = """
[agents.gpt]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"
secrets = ["OPENAI_API_KEY"]

[[requests]]
id = "REQ-009"
secret = "OPENAI_API_KEY"
description = "OpenAI key"
agents = ["gpt"]

[runner]
lease = "3s"
heartbeat = "1s"
sweep_interval = "0.5s"
poll_interval = "0.2s"
credential_retry = "0.3s"
"""


def test_a_waiting_credential_holds_the_task_until_it_is_provided(
    make_repo: Callable[..., Path], queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    root = make_repo(config=CONFIG)
    store = Store.open(queue_url)
    store.tasks.add_many(
        [
            NewTask(
                "use the key",
                'printf "%s" "$OPENAI_API_KEY" | sha256sum | cut -d" " -f1 > key.txt',
                id="k",
                agent="gpt",
            )
        ]
    )
    runner = Runner(Repository.discover(root), parse_config(CONFIG), store, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        waiting: list[Task] = []

        def released() -> bool:  # between two attempts (a claim clears the reason)
            task = store.tasks.get("k")
            waiting.append(task)
            return task.status is TaskState.READY and "REQ-009" in (task.reason or "")

        wait_for(released, "the task is given back, waiting for the credential")
        # Several retries later: still not started, no attempt spent.
        wait_for(lambda: len(store.runs.list(task_id="k")) >= 3, "three tries")
        wait_for(released, "the task is given back again")
        task = waiting[-1]
        assert task.attempts == 0
        assert task.reason is not None
        assert task.reason.startswith("waiting for credential request REQ-009 (OPENAI_API_KEY)")
        assert "`capataz secret set OPENAI_API_KEY`" in task.reason
        runs = store.runs.list(task_id="k")
        assert len(runs) >= 2 and {r.status for r in runs} == {"released"}  # never started
        assert not (root / "key.txt").exists()

        state = root / ".capataz"
        Vault(store, MasterKey.load(state)).set("OPENAI_API_KEY", "sk-runner-ok", actor="test")
        wait_for(lambda: store.tasks.get("k").status is TaskState.DONE, "k is done")
    finally:
        thread.join(timeout=60)
        store.close()
    assert not thread.is_alive()
    # The agent saw the value (its digest landed; the value itself would be a leak).
    assert git(root, "show", "main:key.txt").strip() == hashlib.sha256(b"sk-runner-ok").hexdigest()
