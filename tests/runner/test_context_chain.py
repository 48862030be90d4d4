"""Context flowing through a dependency chain: real runner, real git, real sandbox.

The repository does not ignore ``.capataz/`` here, so anything capataz failed to take
out of a workspace would be committed (and blocked by the protected-path gate)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from tests.conftest import git

from capataz.config import parse_config
from capataz.context.store import open_context_store
from capataz.runner import Runner
from capataz.secrets.vault import KEY_ENV
from capataz.store import NewTask, Store, TaskState
from capataz.workspace.repo import Repository

CONFIG = """
[project]
escalation_timeout = "30s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"

# $1 is the context the task received, substituted into the command.
[agents.reader]
command = ["bash", "-c", "{instruction}", "agent", "{context}"]
timeout = "60s"

[agents.narrow]
command = ["bash", "-c", "{instruction}", "agent", "{context}"]
timeout = "60s"
context_read = ["deploy.*"]

[runner]
lease = "5s"
heartbeat = "1s"
sweep_interval = "0.5s"
poll_interval = "0.2s"

[policy]
forbidden_paths = ["legacy/**"]
"""

PUBLISH = "mkdir -p .capataz && printf '%s' '{json}' > .capataz/context-out.json"
RECEIVE = "printf '%s\\n' \"$1\" > {name}-arg.json && cat .capataz/context.json > {name}-file.json"


@pytest.fixture
def repo(make_repo: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    return make_repo(config=CONFIG, files={".gitignore": "*.pyc\n"})


def run_runner(repo: Path, store: Store) -> None:
    runner = Runner(Repository.discover(repo), parse_config(CONFIG), store, exit_when_idle=True)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "runner did not finish"


def landed_json(repo: Path, path: str) -> object:
    return json.loads(git(repo, "show", f"main:{path}"))


def test_context_flows_through_a_dependency_chain(repo: Path, queue_url: str) -> None:
    build = json.dumps({"build.version": "1.2.3", "_ttl": "1h"})
    deploy = json.dumps({"deploy.url": "http://svc.internal"})
    store = Store.open(queue_url)
    store.tasks.add_many(
        [
            NewTask("build", f"{PUBLISH.format(json=build)} && echo a > a.txt", id="a"),
            # Publishes without changing a file: completes with no changes, still publishes.
            NewTask("deploy", PUBLISH.format(json=deploy), id="p"),
            NewTask("use", RECEIVE.format(name="b"), agent="reader", id="b", depends_on=["a", "p"]),
            NewTask(
                "narrow", RECEIVE.format(name="c"), agent="narrow", id="c", depends_on=["a", "p"]
            ),
            # Blocked (forbidden path): what it published is never stored.
            NewTask(
                "blocked",
                f"{PUBLISH.format(json=json.dumps({'blocked.key': 1}))}"
                " && mkdir -p legacy && echo x > legacy/x.py",
                id="x",
            ),
            # The exception is for the two context files only: anything else under
            # .capataz/ is committed and blocked by the protected-path gate.
            NewTask(
                "sneaky",
                f"{PUBLISH.format(json=json.dumps({'sneaky.key': 1}))}"
                " && echo approve > .capataz/escalation-decision.json",
                id="y",
            ),
        ]
    )
    run_runner(repo, store)
    states = {t.id: t.status for t in store.tasks.list()}
    assert states == {
        "a": TaskState.DONE,
        "p": TaskState.DONE,
        "b": TaskState.DONE,
        "c": TaskState.DONE,
        "x": TaskState.BLOCKED,
        "y": TaskState.BLOCKED,
    }
    sneaky = store.runs.get(store.runs.list(task_id="y")[0].id)
    assert [(v["type"], v["file"]) for v in sneaky.violations] == [
        ("FORBIDDEN_PATH", ".capataz/escalation-decision.json")
    ]

    everything = {"build.version": "1.2.3", "deploy.url": "http://svc.internal"}
    assert landed_json(repo, "b-arg.json") == everything
    assert landed_json(repo, "b-file.json") == everything
    # The narrow agent may read deploy.* only.
    assert landed_json(repo, "c-arg.json") == {"deploy.url": "http://svc.internal"}
    assert landed_json(repo, "c-file.json") == {"deploy.url": "http://svc.internal"}

    committed = git(repo, "log", "--name-only", "--format=", "main").split()
    assert "a.txt" in committed and not [p for p in committed if p.startswith(".capataz")]
    for task in ("a", "b", "c"):
        detail = store.runs.get(store.runs.list(task_id=task)[0].id)
        assert not [c for c in detail.file_changes if c["path"].startswith(".capataz")]
        assert not detail.violations

    context = open_context_store(store, repo)
    listed = {info.key: info for info in context.list()}
    assert sorted(listed) == ["build.version", "deploy.url"]  # nothing from blocked runs
    assert listed["build.version"].task_id == "a" and listed["build.version"].expires_at
    assert listed["deploy.url"].task_id == "p" and listed["deploy.url"].expires_at is None
    store.close()
