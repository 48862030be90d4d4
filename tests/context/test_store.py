"""The context store (encrypted entries, TTL, rules) and the pipeline's side of it:
delivering context into a workspace and taking a publication out of it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from capataz.agents.commands import render_command
from capataz.config import parse_config
from capataz.context.flow import ContextLink, Publication
from capataz.context.keys import MAX_VALUE_BYTES, ContextError, NoContextEntry
from capataz.context.store import ContextStore, open_context_store
from capataz.errors import CapatazError, ConfigError
from capataz.models import Severity, ViolationType
from capataz.pipeline.runlog import RunLog
from capataz.secrets.vault import KEY_ENV, MasterKey, Vault
from capataz.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(queue_url: str, clock: Clock) -> Iterator[Store]:
    opened = Store.open(queue_url, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def context(store: Store) -> ContextStore:
    return ContextStore(store, Vault(store, MasterKey((Fernet.generate_key(),), KEY_ENV)))


def test_set_get_list_remove_round_trip(context: ContextStore) -> None:
    context.set("build.version", "1.2.3", task_id="a")
    context.set("api/url", {"url": "http://x", "ports": [1, 2], "ok": True, "n": None})
    context.set("count", 7)
    assert context.get("build.version") == "1.2.3"
    assert context.get("api/url") == {"url": "http://x", "ports": [1, 2], "ok": True, "n": None}
    assert context.get("count") == 7
    listed = context.list()
    assert [(i.key, i.task_id) for i in listed] == [
        ("api/url", None),
        ("build.version", "a"),
        ("count", None),
    ]
    assert [i.key for i in context.list("build.")] == ["build.version"]
    assert context.values("api") == {"api/url": context.get("api/url")}
    context.set("count", 8)  # replaces
    assert context.get("count") == 8
    context.remove("count")
    with pytest.raises(NoContextEntry, match="no context entry count") as caught:
        context.get("count")
    assert caught.value.exit_code == 1
    with pytest.raises(NoContextEntry):
        context.remove("count")


def test_returned_values_are_copies(context: ContextStore) -> None:
    context.set("obj", {"a": [1]})
    first = context.get("obj")
    first["a"].append(2)
    assert context.get("obj") == {"a": [1]}


@pytest.mark.parametrize("key", ["", "has space", "semi;colon", "x" * 201, "new\nline", "é"])
def test_bad_keys_are_refused(context: ContextStore, key: str) -> None:
    with pytest.raises(ContextError, match="is not a context key"):
        context.set(key, 1)
    with pytest.raises(ContextError, match="is not a context key"):
        context.get(key)


def test_values_must_be_json_and_small(context: ContextStore) -> None:
    with pytest.raises(ContextError, match="not JSON"):
        context.set("k", {1, 2})
    with pytest.raises(ContextError, match="not JSON"):
        context.set("k", float("nan"))
    with pytest.raises(ContextError, match=f"the limit is {MAX_VALUE_BYTES}"):
        context.set("k", "x" * MAX_VALUE_BYTES)
    with pytest.raises(ContextError):
        context.set_many({"ok": 1, "bad": {2}})
    assert context.list() == []  # all or nothing


def test_entries_expire_after_their_ttl(context: ContextStore, clock: Clock) -> None:
    context.set("short", "s", ttl=60)
    context.set("long", "l", ttl=timedelta(hours=2), task_id="t")
    context.set("forever", "f", task_id="t")
    expiry = {info.key: info.expires_at for info in context.list()}
    assert expiry == {
        "forever": None,
        "long": clock.now + timedelta(hours=2),
        "short": clock.now + timedelta(seconds=60),
    }
    clock.now += timedelta(seconds=61)
    with pytest.raises(NoContextEntry):
        context.get("short")
    assert [i.key for i in context.list()] == ["forever", "long"]
    assert context.for_tasks(["t"]) == {"forever": "f", "long": "l"}
    clock.now += timedelta(hours=3)
    assert context.values() == {"forever": "f"}
    with pytest.raises(ContextError, match="must be positive"):
        context.set("k", 1, ttl=0)


def test_dependents_receive_what_their_dependencies_published(context: ContextStore) -> None:
    context.set_many({"build.version": "1.2.3", "build.sha": "abc"}, task_id="a")
    context.set("deploy.url", "http://x", task_id="b")
    context.set("other", 1, task_id="c")
    assert context.for_tasks(["a", "b"]) == {
        "build.version": "1.2.3",
        "build.sha": "abc",
        "deploy.url": "http://x",
    }
    assert context.for_tasks(["a", "b"], read=["build.v*", "deploy.*"]) == {
        "build.version": "1.2.3",
        "deploy.url": "http://x",
    }
    assert context.for_tasks([]) == {}
    assert context.for_tasks(["a"], read=[]) == {}


def test_values_are_encrypted_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "capataz.db"
    store = Store.open(f"sqlite:///{path}")
    context = ContextStore(store, Vault(store, MasterKey((Fernet.generate_key(),), KEY_ENV)))
    context.set("build.token", "plaintext-needle-4711", task_id="a")
    context.set("obj", {"inner": "another-needle-0815"})
    assert context.get("build.token") == "plaintext-needle-4711"
    store.close()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("capataz.db")]
    data = b"".join(p.read_bytes() for p in files)
    assert b"build.token" in data  # keys are not secret ...
    assert b"plaintext-needle-4711" not in data  # ... values are
    assert b"another-needle-0815" not in data


def test_a_wrong_master_key_says_so(store: Store, context: ContextStore) -> None:
    context.set("k", "v")
    other = ContextStore(store, Vault(store, MasterKey((Fernet.generate_key(),), KEY_ENV)))
    with pytest.raises(CapatazError, match="does not open context entry k"):
        other.get("k")


def test_the_key_file_is_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = Store.open(f"sqlite:///{tmp_path / 'q.db'}")
    context = open_context_store(store, tmp_path)
    context.list()  # no value read or written: no key needed
    assert not (tmp_path / ".capataz" / "master.key").exists()
    context.set("k", [1])
    key_file = tmp_path / ".capataz" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert open_context_store(store, tmp_path).get("k") == [1]  # a new process: same key
    store.close()


def test_fast_read_matches_the_general_query(
    store: Store, context: ContextStore, clock: Clock
) -> None:
    """The hot path (raw sqlite3 on SQLite) reads what the general query reads."""
    context.set("a", 1, task_id="t", ttl=30)
    context.set("b", 2)
    for key in ("a", "b"):
        fast = store.context.entry(key)
        (general,) = store.context.rows(keys=[key])
        assert fast == general
    assert store.context.entry("missing") is None
    clock.now += timedelta(seconds=31)
    assert store.context.entry("a") is None


# -- configuration -------------------------------------------------------------------


def test_agent_rules_default_to_everything_and_are_validated() -> None:
    config = parse_config('[agents.x]\ncommand = ["x"]\ncontext_read = ["build.*"]\n')
    assert config.agents["x"].context_read == ["build.*"]
    assert config.agents["x"].context_write == ["*"]
    with pytest.raises(ConfigError) as caught:
        parse_config('[agents.x]\ncommand = ["x"]\n\ncontext_write = ["a b"]\n')
    text = str(caught.value)
    assert text.startswith("capataz.toml:4: agents.x.context_write:"), text
    assert "not a context key pattern" in text


def test_context_placeholder_is_substituted_in_one_pass(tmp_path: Path) -> None:
    agent = parse_config('[agents.x]\ncommand = ["run", "{context}", "--i={instruction}"]\n')
    argv = render_command(
        agent.agents["x"],
        instruction="{context}",
        workspace=tmp_path,
        task_id="t",
        context='{"k": "{instruction}"}',
    )
    assert argv == ["run", '{"k": "{instruction}"}', "--i={context}"]


# -- the workspace side ----------------------------------------------------------------

CONFIG = parse_config(
    '[agents.shell]\ncommand = ["bash"]\n'
    '[agents.narrow]\ncommand = ["bash"]\ncontext_read = ["build.*"]\n'
    'context_write = ["build.*"]\n'
)


def _take(tree: Path, agent: str = "shell") -> Publication:
    return ContextLink().take(tree, CONFIG, agent)


def _publish(tree: Path, text: str) -> None:
    (tree / ".capataz").mkdir(exist_ok=True)
    (tree / ".capataz" / "context-out.json").write_text(text)


def test_delivery_writes_the_file_and_the_placeholder_text(
    tmp_path: Path, context: ContextStore, store: Store
) -> None:
    store.tasks.add("a", "true", id="a")
    store.tasks.add("b", "true", id="b", depends_on=["a"])
    context.set_many({"build.version": "1.2.3", "secret.x": 1}, task_id="a")
    link = ContextLink(context)
    log = RunLog(tmp_path / "run.log")
    tree = tmp_path / "tree"
    tree.mkdir()
    text = link.deliver(tree, "b", CONFIG.agents["narrow"], log)
    assert json.loads(text) == {"build.version": "1.2.3"}
    assert json.loads((tree / ".capataz" / "context.json").read_text()) == json.loads(text)
    assert json.loads(link.deliver(tree, "b", CONFIG.agents["shell"], log)) == {
        "build.version": "1.2.3",
        "secret.x": 1,
    }
    assert link.deliver(tree, "a", CONFIG.agents["shell"], log) == "{}"  # no dependencies
    assert ContextLink().deliver(tree, "b", CONFIG.agents["shell"], log) == "{}"  # no store
    publication = _take(tree)
    assert not (tree / ".capataz").exists()  # delivered file removed, empty dir dropped
    assert publication.entries == {} and publication.violations == []
    log.close()


def test_a_publication_is_taken_out_and_checked(tmp_path: Path) -> None:
    _publish(tmp_path, json.dumps({"build.version": "1.2.3", "n": {"a": 1}, "_ttl": "1h"}))
    (tmp_path / ".capataz" / "context.json").write_text("{}")
    publication = _take(tmp_path)
    assert publication.entries == {"build.version": "1.2.3", "n": {"a": 1}}
    assert publication.ttl == 3600
    assert publication.violations == []
    assert not (tmp_path / ".capataz").exists()


def test_keys_outside_the_write_rules_are_violations(tmp_path: Path) -> None:
    _publish(tmp_path, json.dumps({"build.version": "1", "deploy.url": "x", "bad key": 1}))
    publication = _take(tmp_path, "narrow")
    assert publication.entries == {"build.version": "1"}
    found = publication.violations
    assert [v.type for v in found] == [ViolationType.CONTEXT] * 2
    assert all(v.severity is Severity.MEDIUM for v in found)
    assert "may not publish context key 'deploy.url'" in found[0].details
    assert "'bad key' is not a context key" in found[1].details


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "holds a list, not an object"),
        ('{"k": 1, "_ttl": "soon"}', "_ttl"),
        ('{"k": NaN}', "not JSON"),
    ],
)
def test_malformed_publications_are_violations(tmp_path: Path, text: str, needle: str) -> None:
    _publish(tmp_path, text)
    publication = _take(tmp_path)
    assert publication.entries == {}
    (violation,) = publication.violations
    assert needle in violation.details and violation.file == ".capataz/context-out.json"
    assert not (tmp_path / ".capataz").exists()


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "context-out.json").write_text('{"stolen": 1}')
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".capataz").mkdir()
    os.symlink(outside / "context-out.json", tree / ".capataz" / "context-out.json")
    publication = _take(tree)
    assert publication.entries == {}
    assert "is a symlink" in publication.violations[0].details
    assert (outside / "context-out.json").exists()  # the link went, not its target
    assert not (tree / ".capataz").exists()
    # A .capataz that is itself a symlink is never entered: nothing read or removed
    # (the protected-path gate judges the symlink when it is committed).
    os.symlink(outside, tree / ".capataz")
    assert _take(tree).entries == {}
    assert (outside / "context-out.json").exists() and (tree / ".capataz").is_symlink()


def test_only_the_two_context_files_are_taken(tmp_path: Path) -> None:
    _publish(tmp_path, '{"k": 1}')
    (tmp_path / ".capataz" / "progress.json").write_text("forged")
    (tmp_path / ".capataz" / "context.json").mkdir()
    assert _take(tmp_path).entries == {"k": 1}
    assert sorted(p.name for p in (tmp_path / ".capataz").iterdir()) == [
        "context.json",
        "progress.json",
    ]


def test_oversized_and_special_publications_are_refused(tmp_path: Path) -> None:
    _publish(tmp_path, '{"k": "' + "x" * (1024 * 1024) + '"}')
    assert "the limit is" in _take(tmp_path).violations[0].details
    (tmp_path / ".capataz").mkdir()
    os.mkfifo(tmp_path / ".capataz" / "context-out.json")
    assert "not a regular file" in _take(tmp_path).violations[0].details
