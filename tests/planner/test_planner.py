"""``capataz.planner`` end to end against a fake Chat Completions server: what it asks
(structured output, the context), what it stores (PENDING, APPLIED, REJECTED with the
reason) and every way the model API can fail, each one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.agents.fake_models.openai_chat import FakeOpenAIChat

from capataz.planner import (
    PlannerAnswerError,
    PlannerCredentialWaiting,
    PlannerNotConfigured,
    PlannerRateLimited,
    PlannerTimeout,
    PlannerUnauthorized,
    apply_directive,
    plan,
    planner_key,
)
from capataz.store import DirectiveStatus, Store, TaskState

from .conftest import GOOD, plan_json, planner_config, task

KEY = "sk-test-planner-key-0123456789"


def test_a_good_plan_is_stored_pending_and_applies_in_order(store: Store) -> None:
    fake = FakeOpenAIChat(answer=GOOD)
    with fake as base:
        result = plan(store, planner_config(base), api_key=KEY, repo_root=None, goal="ship it")
    assert (len(result.directives), result.tasks_created) == (1, 0)
    assert result.model == "fake-planner"
    assert result.usage["total_tokens"] == 1234 + 56
    directive = result.directives[0]
    assert directive.status is DirectiveStatus.PENDING
    assert [t.name for t in directive.tasks] == ["build", "test", "docs"]
    assert store.tasks.list() == []  # nothing queued until applied

    sent = fake.completions[0]
    headers = {name.lower(): value for name, value in sent.headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "fake-planner"
    assert sent.body["response_format"]["type"] == "json_schema"
    assert sent.body["response_format"]["json_schema"]["strict"] is True
    user = sent.body["messages"][1]["content"]
    assert "## Goal\nship it" in user
    assert "coder: writes code" in sent.body["messages"][0]["content"]

    applied, created = apply_directive(store, planner_config(base), directive.id, actor="alice")
    assert applied.status is DirectiveStatus.APPLIED
    assert [t.title for t in created] == ["Do build", "Do test", "Do docs"]
    assert [t.status for t in created] == [TaskState.READY, TaskState.PENDING, TaskState.PENDING]
    assert created[1].depends_on == (created[0].id,)
    assert created[2].depends_on == (created[1].id,)
    assert created[1].agent == "coder"
    assert applied.created_task_ids == tuple(t.id for t in created)
    assert [t.id for t in store.tasks.list()] == list(applied.created_task_ids)


def test_auto_apply_queues_valid_directives_at_once(store: Store) -> None:
    with FakeOpenAIChat(answer=GOOD) as base:
        config = planner_config(base, "auto_apply = true")
        result = plan(store, config, api_key=KEY, repo_root=None)
    assert result.tasks_created == 3
    assert result.directives[0].status is DirectiveStatus.APPLIED
    assert result.directives[0].decided_by == "planner"
    assert store.tasks.list()[0].status is TaskState.READY


@pytest.mark.parametrize(
    ("tasks", "reason"),
    [
        ([task("a", "b"), task("b", "a")], "dependency cycle: a -> b -> a"),
        ([task("a", agent="nobody")], "task 'a' agent: unknown agent 'nobody'"),
        ([task("a", "ghost")], "task 'a' depends on 'ghost', which is neither"),
        ([task("a"), task("a")], "'a' already used by task #1"),
        ([], "the directive proposes no tasks"),
        ([{"name": "a"}], "tasks.0.instruction: Field required"),
    ],
    ids=["cycle", "unknown-agent", "unknown-dependency", "same-name", "no-tasks", "shape"],
)
def test_an_invalid_directive_is_rejected_with_its_reason_and_queues_nothing(
    store: Store, tasks: list[dict[str, object]], reason: str
) -> None:
    answer = plan_json(
        {"title": "Broken", "rationale": "r", "tasks": tasks},
        {"title": "Fine", "rationale": "r", "tasks": [task("x")]},
    )
    with FakeOpenAIChat(answer=answer) as base:
        result = plan(store, planner_config(base, "auto_apply = true"), api_key=KEY, repo_root=None)
    broken, fine = result.directives
    assert broken.status is DirectiveStatus.REJECTED
    assert broken.reason is not None
    assert reason in broken.reason
    assert broken.raw_answer is not None
    assert json.loads(broken.raw_answer)["title"] == "Broken"
    assert fine.status is DirectiveStatus.APPLIED  # the other directive is unaffected
    assert [t.title for t in store.tasks.list()] == ["Do x"]


def test_an_answer_that_is_not_json_is_kept_rejected_and_reported(store: Store) -> None:
    with (
        FakeOpenAIChat(answer="Sure! Here is the plan: {directives: oops") as base,
        pytest.raises(PlannerAnswerError, match="not the JSON asked for") as caught,
    ):
        plan(store, planner_config(base), api_key=KEY, repo_root=None)
    assert "\n" not in str(caught.value)
    (kept,) = store.directives.list()
    assert kept.status is DirectiveStatus.REJECTED
    assert kept.id in caught.value.message
    assert kept.raw_answer == "Sure! Here is the plan: {directives: oops"
    assert store.tasks.list() == []


def test_a_refused_key_is_one_clear_error_without_the_key(store: Store) -> None:
    with FakeOpenAIChat("unauthorized") as base, pytest.raises(PlannerUnauthorized) as caught:
        plan(store, planner_config(base), api_key=KEY, repo_root=None)
    assert "refused the key (401)" in caught.value.message
    assert caught.value.fix == "store a valid key with `capataz secret set OPENAI_API_KEY`"
    assert KEY not in str(caught.value)
    assert store.directives.list() == []


def test_429_is_retried_with_backoff_then_succeeds(store: Store) -> None:
    waits: list[float] = []
    fake = FakeOpenAIChat("rate_limited_then_edit", answer=GOOD)
    with fake as base:
        result = plan(store, planner_config(base), api_key=KEY, repo_root=None, sleep=waits.append)
    assert len(fake.completions) == 2
    assert len(waits) == 1
    assert 0 <= waits[0] <= 0.5  # the first wait of capataz.retry's schedule
    assert result.directives[0].status is DirectiveStatus.PENDING


def test_429_every_time_gives_up_after_max_retries(store: Store) -> None:
    fake = FakeOpenAIChat("rate_limited")
    with (
        fake as base,
        pytest.raises(PlannerRateLimited, match=r"rate limiting \(429\).*after 2 retries"),
    ):
        plan(store, planner_config(base), api_key=KEY, repo_root=None, sleep=lambda _: None)
    assert len(fake.completions) == 3  # the first try and max_retries = 2


def test_a_model_that_hangs_times_out_clearly(store: Store) -> None:
    with FakeOpenAIChat("hang") as base:
        config = planner_config(base).model_copy(
            update={"planner": planner_config(base).planner.model_copy(update={"timeout": 0.5})}  # type: ignore[union-attr]
        )
        with pytest.raises(PlannerTimeout, match=r"did not answer within 0.5 s") as caught:
            plan(store, config, api_key=KEY, repo_root=None)
    assert caught.value.fix == "run again later, or raise [planner] timeout"


def test_no_planner_table_means_no_planner(store: Store) -> None:
    from capataz.config import default_config

    with pytest.raises(PlannerNotConfigured, match=r"no \[planner\] table"):
        plan(store, default_config(), api_key=KEY, repo_root=None)


def test_the_context_file_backlog_and_budget(store: Store, tmp_path: Path) -> None:
    (tmp_path / "PLANNER.md").write_text("We build a rocket.\n" + "detail line\n" * 5000)
    failed = store.tasks.add("Broken build", "make", id="t-broken")
    store.tasks.cancel(failed.id, "gave up")
    fake = FakeOpenAIChat(answer=plan_json())
    with fake as base:
        config = planner_config(base, 'context_file = "PLANNER.md"\ncontext_tokens = 1000')
        result = plan(store, config, api_key=KEY, repo_root=tmp_path)
    assert result.directives == []
    messages = fake.completions[0].body["messages"]
    user = messages[1]["content"]
    assert "We build a rocket." in user
    assert "trimmed to the planner's context budget" in user
    total = sum(len(m["content"]) for m in messages)
    assert total <= 1000 * 4  # the documented estimate: four characters a token


def test_a_missing_key_names_its_waiting_request_and_the_fix(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from capataz import redaction
    from capataz.secrets.vault import KEY_ENV, MasterKey, Vault

    monkeypatch.delenv(KEY_ENV, raising=False)
    extra = '\n[[requests]]\nid = "REQ-009"\nsecret = "OPENAI_API_KEY"\n'
    config = planner_config("http://127.0.0.1:9/v1", extra)
    with pytest.raises(PlannerCredentialWaiting) as caught:
        planner_key(store, config, tmp_path)
    assert str(caught.value) == (
        "the planner cannot run: credential request REQ-009 (OPENAI_API_KEY) is WAITING — "
        "provide it with `capataz secret set OPENAI_API_KEY` or the panel's Setup"
    )
    Vault(store, MasterKey.load(tmp_path)).set("OPENAI_API_KEY", KEY)
    assert planner_key(store, config, tmp_path) == KEY
    assert KEY not in redaction.redact(f"the key is {KEY}")
