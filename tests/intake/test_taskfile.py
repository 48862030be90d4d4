"""Task files: parsing, validation messages that name the task and field, and the
mapping of local names to generated ids."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capataz.config import parse_config
from capataz.errors import UnknownAgentError
from capataz.intake.taskfile import TaskFileError, load_taskfile, parse_taskfile, to_specs
from capataz.intake.tasks import PreparedTask, default_title, parse_run_after

CONFIG = parse_config('[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\n')

DIAMOND_YAML = """
tasks:
  - name: base
    instruction: create the module
    priority: 5
    labels: gpu
  - name: left
    instruction: add the parser
    depends_on: base
  - name: right
    instruction: add the printer
    depends_on: [base]
    max_attempts: 1
  - name: top
    title: Wire it together
    instruction: |
      connect parser and printer
      and test the whole
    depends_on: [left, right, t-existing-1]
    idempotency_key: wire-1
    allow_high: true
"""


def specs_of(text: str, fmt: str = "yaml") -> list[PreparedTask]:
    counter = itertools.count(1)
    return to_specs(parse_taskfile(text, fmt=fmt), CONFIG, new_id=lambda: f"t-{next(counter)}")


def test_yaml_diamond_maps_names_to_ids() -> None:
    items = specs_of(DIAMOND_YAML)
    assert [item.label for item in items] == ["base", "left", "right", "top"]
    base, left, right, top = (item.spec for item in items)
    assert (base.id, left.id, right.id, top.id) == ("t-1", "t-2", "t-3", "t-4")
    assert base.depends_on == () and base.priority == 5 and base.labels == ("gpu",)
    assert left.depends_on == ("t-1",) and right.depends_on == ("t-1",)
    assert right.max_attempts == 1
    # Names become ids; anything else is an id of a task already queued.
    assert top.depends_on == ("t-2", "t-3", "t-existing-1")
    assert top.title == "Wire it together" and top.idempotency_key == "wire-1"
    assert top.allow_high and top.agent == "shell"
    assert base.title == "create the module"  # default: the instruction's first line


def test_json_list_form_and_unnamed_tasks() -> None:
    text = json.dumps([{"instruction": "one"}, {"instruction": "two", "agent": "shell"}])
    items = specs_of(text, "json")
    assert [item.label for item in items] == ["#1", "#2"]
    assert [item.spec.instruction for item in items] == ["one", "two"]


def test_load_picks_the_format_by_extension(tmp_path: Path) -> None:
    (tmp_path / "t.yml").write_text("- instruction: a\n")
    (tmp_path / "t.json").write_text('{"tasks": [{"instruction": "b"}]}')
    assert load_taskfile(tmp_path / "t.yml")[0].instruction == "a"
    assert load_taskfile(tmp_path / "t.json")[0].instruction == "b"


@pytest.mark.parametrize(
    ("text", "fmt", "needles"),
    [
        (
            "- instruction: a\n  name: x: y\n",
            "yaml",
            ("tasks:2: not valid YAML: mapping values are not allowed here",),
        ),
        ('[{"instruction": "a",}]', "json", ("tasks:1: not valid JSON",)),
        ("", "yaml", ("expected a list of tasks",)),
        ("just words", "yaml", ("expected a list of tasks",)),
        ("[]", "json", ("tasks: List should have at least 1 item",)),
        ("tasks: [{instruction: a}]\nextra: 1\n", "yaml", ("tasks: extra: unknown key",)),
        (
            "- name: a\n  instruction: x\n- name: b\n  title: no instruction\n",
            "yaml",
            ("task #2 'b': instruction is required",),
        ),
        (
            "- instruction: x\n  depends-on: [a]\n",
            "yaml",
            ("task #1: unknown field 'depends-on'", "depends_on"),
        ),
        (
            "- name: a\n  instruction: x\n  priority: high\n",
            "yaml",
            ("task #1 'a': priority: Input should be a valid integer",),
        ),
        ("- instruction: x\n  max_attempts: 0\n", "yaml", ("task #1: max_attempts:",)),
        ("- instruction: '   '\n", "yaml", ("task #1: instruction: must not be blank",)),
        ("- just a string\n", "yaml", ("task #1: Input should be a valid dictionary",)),
        (
            "- name: a\n  instruction: x\n  run_after: soonish\n",
            "yaml",
            ("task #1 'a': run_after: 'soonish' is neither an ISO time",),
        ),
        (
            "- name: a\n  instruction: x\n- name: a\n  instruction: y\n",
            "yaml",
            ("task #2: name 'a' already used by task #1",),
        ),
        (
            "- instruction: x\n  idempotency_key: k\n- instruction: y\n  idempotency_key: k\n",
            "yaml",
            ("task #2: idempotency_key 'k' already used by task #1",),
        ),
    ],
)
def test_problems_are_one_line_naming_task_and_field(
    text: str, fmt: str, needles: tuple[str, ...]
) -> None:
    with pytest.raises(TaskFileError) as caught:
        parse_taskfile(text, fmt=fmt, source="tasks")
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_several_problems_say_how_many_more() -> None:
    with pytest.raises(TaskFileError, match=r"\(and 2 more problems\)"):
        parse_taskfile("- {}\n- {}\n- {}\n", fmt="yaml")


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("tasks.txt", "[]", "name the file *.json, *.yaml or *.yml"),
        ("missing.yaml", None, "cannot be read (No such file or directory)"),
        ("latin1.yaml", b"- instruction: caf\xe9\n", "cannot be read"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, name: str, content: str | bytes | None, needle: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(TaskFileError, match=None) as caught:
        load_taskfile(path)
    assert needle in str(caught.value)


def test_unknown_agent_names_the_task() -> None:
    with pytest.raises(UnknownAgentError) as caught:
        specs_of("- name: a\n  instruction: x\n  agent: gpt\n")
    assert "task a: unknown agent 'gpt'; known agents: shell" in str(caught.value)


def test_run_after_delays_count_from_adding_and_times_keep_their_zone() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    text = """
- {instruction: a, run_after: 10m}
- {instruction: b, run_after: 90}
- {instruction: c, run_after: "2030-01-02T03:04:05Z"}
- {instruction: d, run_after: 2030-01-02 03:04:05+01:00}
- {instruction: e}
"""
    items = to_specs(parse_taskfile(text, fmt="yaml"), CONFIG, now=now)
    when = [item.spec.run_after for item in items]
    assert when[0] == now + timedelta(minutes=10)
    assert when[1] == now + timedelta(seconds=90)
    assert when[2] == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert when[3] == datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert when[4] is None


def test_parse_run_after() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_run_after("2h", now) == now + timedelta(hours=2)
    assert parse_run_after("2030-05-06T07:08:09+00:00", now) == datetime(
        2030, 5, 6, 7, 8, 9, tzinfo=UTC
    )
    naive = parse_run_after("2030-05-06T07:08:09", now)
    assert naive.tzinfo is not None  # local time, made explicit
    assert naive.replace(tzinfo=None) == datetime(2030, 5, 6, 7, 8, 9)
    with pytest.raises(ValueError, match="neither an ISO time"):
        parse_run_after("tomorrow", now)


def test_default_title() -> None:
    assert default_title("\n  fix the bug  \nin detail") == "fix the bug"
    long = default_title("x" * 200)
    assert len(long) == 80 and long.endswith("…")
