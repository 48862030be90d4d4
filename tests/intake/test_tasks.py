"""The one intake (capataz.intake.tasks) on both databases: defaults and checks, typed
refusals that keep their type and speak of tasks by label, idempotency, and the API's
one table of statuses for those types."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from capataz.api.errors import status_of
from capataz.config import parse_config
from capataz.errors import CapatazError, TaskError, UnknownAgentError
from capataz.intake.errors import (
    DependencyCycleError,
    InvalidTask,
    NoSuchTaskError,
    TaskExistsError,
    UnknownDependencyError,
)
from capataz.intake.tasks import TaskRequest, prepare, submit
from capataz.store import Store, TaskState
from capataz.store.errors import (
    ArgumentRefusedError,
    ClaimConflictError,
    NoSuchRunError,
    NoSuchRunnerError,
)

CONFIG = parse_config('[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n')
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _flags(index: int, field: str) -> str:
    return "--" + field.replace("_", "-")


def test_defaults_ids_and_local_names() -> None:
    counter = itertools.count(1)
    prepared = prepare(
        [
            TaskRequest("build it\nin detail", name="build", labels=["gpu", "gpu"]),
            TaskRequest("test it", depends_on=["build", "build", "t-queued"], run_after="10m"),
        ],
        CONFIG,
        now=NOW,
        new_id=lambda: f"t-{next(counter)}",
    )
    first, second = (item.spec for item in prepared)
    assert [item.label for item in prepared] == ["build", "#2"]
    assert (first.id, first.title, first.agent, first.labels) == (
        "t-1",
        "build it",
        "shell",
        ("gpu",),
    )
    assert second.depends_on == ("t-1", "t-queued")
    assert second.run_after == NOW + timedelta(minutes=10)
    alone = prepare([TaskRequest("x")], CONFIG, now=NOW)[0]
    assert alone.label == "the new task" and alone.spec.id and alone.spec.id.startswith("t-2030")


@pytest.mark.parametrize(
    ("request_", "needle", "field"),
    [
        (TaskRequest("  "), "the instruction is empty", "instruction"),
        (TaskRequest("x", max_attempts=0), "--max-attempts 0: must be at least 1", "max_attempts"),
        (TaskRequest("x", priority=2**31), "--priority: 2147483648 is out of range", "priority"),
        (TaskRequest("x", run_after="soonish"), "--run-after: 'soonish' is neither", "run_after"),
        (TaskRequest("x", run_after="99999999h"), "--run-after:", "run_after"),
        (TaskRequest("x", id="../up"), "--id: invalid task id", "id"),
        (TaskRequest("x", labels=["a\x00b"]), "--labels: text cannot contain NUL", "labels"),
    ],
)
def test_invalid_requests_name_the_field(request_: TaskRequest, needle: str, field: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        prepare([request_], CONFIG, names=_flags)
    assert needle in str(caught.value)
    assert caught.value.field == field
    assert status_of(caught.value) == 422


def test_duplicates_in_one_batch_and_unknown_agents() -> None:
    with pytest.raises(InvalidTask, match="'k' already used by task #1"):
        prepare(
            [TaskRequest("a", idempotency_key="k"), TaskRequest("b", idempotency_key="k")], CONFIG
        )
    with pytest.raises(InvalidTask, match="'t-1' already used"):
        prepare([TaskRequest("a", id="t-1"), TaskRequest("b", id="t-1")], CONFIG)
    with pytest.raises(UnknownAgentError, match="agent: unknown agent 'gpt'"):
        prepare([TaskRequest("a", agent="gpt")], CONFIG)


def test_store_refusals_keep_their_type_and_speak_of_labels(store: Store) -> None:
    with pytest.raises(UnknownDependencyError, match=r"^the new task depends on unknown task t-x"):
        submit(store, prepare([TaskRequest("a", depends_on=["t-x"])], CONFIG), actor="test")
    batch = [
        TaskRequest("a", name="a", depends_on=["b"]),
        TaskRequest("b", name="b", depends_on=["a"]),
    ]
    with pytest.raises(DependencyCycleError, match=r"dependency cycle: (a -> b -> a|b -> a -> b)"):
        submit(store, prepare(batch, CONFIG), actor="test")
    added = submit(store, prepare([TaskRequest("a", id="t-given")], CONFIG), actor="test")[0]
    assert (added.label, added.task.id, added.created) == ("t-given", "t-given", True)
    with pytest.raises(TaskExistsError, match="task t-given already exists"):
        submit(store, prepare([TaskRequest("b", id="t-given")], CONFIG), actor="test")
    assert store.tasks.list() == [added.task]


def test_an_idempotency_key_returns_the_queued_task(store: Store) -> None:
    first = submit(store, prepare([TaskRequest("a", idempotency_key="k")], CONFIG), actor="t")[0]
    again = submit(store, prepare([TaskRequest("b", idempotency_key="k")], CONFIG), actor="t")[0]
    assert first.created and not again.created
    assert again.task == first.task and first.task.status is TaskState.READY


def test_one_table_of_statuses() -> None:
    assert status_of(NoSuchTaskError("no task t")) == 404
    assert status_of(UnknownDependencyError("x")) == 422
    assert status_of(DependencyCycleError("x")) == 422
    assert status_of(TaskExistsError("x")) == 409
    assert status_of(TaskError("task t already ended")) == 409
    assert status_of(CapatazError("anything else")) == 409
    assert status_of(NoSuchRunError("no run r")) == 404
    assert status_of(NoSuchRunnerError("no runner r")) == 404
    assert status_of(ArgumentRefusedError("limit and offset cannot be negative")) == 422
    assert status_of(ClaimConflictError("t is taken")) == 409
