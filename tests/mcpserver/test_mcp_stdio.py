"""Acceptance: `capataz mcp` over stdio, driven by the MCP SDK's own client exactly as
Claude Code starts a server (a child process, JSON-RPC on its stdin and stdout)."""

from __future__ import annotations

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from tests.mcpserver.conftest import (
    ALL_TOOLS,
    CAPATAZ,
    READ_TOOLS,
    SECRET_NAME,
    SECRET_VALUE,
    World,
    call,
    data,
    error_text,
    over_stdio,
    tool_names,
)

from capataz.mcpserver import subtask_key
from capataz.store import TaskState


@pytest.mark.parametrize(
    ("role", "expected"), [("viewer", READ_TOOLS), ("operator", ALL_TOOLS), ("admin", ALL_TOOLS)]
)
def test_each_role_is_shown_only_the_tools_it_may_call(
    world: World, role: str, expected: list[str]
) -> None:
    async def scenario() -> list[str]:
        async with over_stdio(world, role) as session:
            return await tool_names(session)

    assert anyio.run(scenario) == expected


def test_a_viewer_lists_tasks_and_reads_a_run_and_its_log(world: World) -> None:
    async def scenario() -> dict[str, object]:
        async with over_stdio(world, "viewer") as session:
            return {
                "all": data(await call(session, "list_tasks")),
                "blocked": data(await call(session, "list_tasks", status="blocked")),
                "page": data(await call(session, "list_tasks", limit=1)),
                "task": data(await call(session, "show_task", task_id=world.run_task_id)),
                "run": data(await call(session, "show_run", run_id=world.run_id)),
                "log": data(await call(session, "run_log", run_id=world.run_id, lines=5)),
                "bad_state": error_text(await call(session, "list_tasks", status="stuck")),
                "no_task": error_text(await call(session, "show_task", task_id="t-nope")),
                "no_run": error_text(await call(session, "run_log", run_id="r-nope")),
                "typo": error_text(await call(session, "show_run", run="x")),
            }

    seen = anyio.run(scenario)
    listed = seen["all"]
    assert isinstance(listed, dict)
    assert {t["id"] for t in listed["tasks"]} == {world.run_task_id, world.parent_id}
    assert listed["total"] == 2 and listed["next_offset"] is None
    blocked = seen["blocked"]
    assert isinstance(blocked, dict)
    assert [t["id"] for t in blocked["tasks"]] == [world.run_task_id]
    page = seen["page"]
    assert isinstance(page, dict)
    assert len(page["tasks"]) == 1 and page["total"] == 2 and page["next_offset"] == 1

    task = seen["task"]
    assert isinstance(task, dict)
    assert task["status"] == "blocked"
    assert task["reason"] == "PROTECTED_PATH: docs.md"
    assert task["attempts"] == 1
    assert [r["run_id"] for r in task["runs"]] == [world.run_id]
    assert task["runs"][0]["decision"] == "block"
    assert task["runs"][0]["result"] == "rejected"

    run = seen["run"]
    assert isinstance(run, dict)
    assert [s["phase"] for s in run["steps"]] == ["agent"]
    assert run["file_changes"][0]["path"] == "docs.md"
    assert run["violations"][0]["type"] == "protected_path"
    assert run["decisions"][0]["reason"] == "protected path"
    assert "log_tail" not in run and run["log_lines"] == 31

    log = seen["log"]
    assert isinstance(log, dict)
    assert log["lines"] == 5 and log["truncated"] is True
    assert log["log"].splitlines()[0] == "line 27"
    assert f"***{SECRET_NAME}***" in log["log"]

    assert "stuck" in str(seen["bad_state"]) and "pending, ready" in str(seen["bad_state"])
    assert "no task t-nope" in str(seen["no_task"]) and "list_tasks" in str(seen["no_task"])
    assert "no run r-nope" in str(seen["no_run"]) and "show_task" in str(seen["no_run"])
    assert "show_run" in str(seen["typo"]) and "run_id" in str(seen["typo"])
    # Nothing the server wrote anywhere holds the secret or the token.
    written = world.errlog.read_text()
    assert SECRET_VALUE not in written and world.tokens["viewer"] not in written


def test_an_operator_adds_a_subtask_once_and_it_waits_for_its_parent(world: World) -> None:
    async def scenario() -> dict[str, object]:
        async with over_stdio(world, "operator") as session:
            first = data(
                await call(
                    session,
                    "add_subtask",
                    parent_task_id=world.parent_id,
                    name="tests",
                    instruction="add tests for the parser",
                    labels=["backend"],
                )
            )
            again = data(
                await call(
                    session,
                    "add_subtask",
                    parent_task_id=world.parent_id,
                    name="tests",
                    instruction="add tests for the parser",
                )
            )
            shown = data(await call(session, "show_task", task_id=world.parent_id))
            bad_agent = error_text(
                await call(
                    session,
                    "add_subtask",
                    parent_task_id=world.parent_id,
                    name="docs",
                    instruction="x",
                    agent="gpt",
                )
            )
            no_parent = error_text(
                await call(
                    session, "add_subtask", parent_task_id="t-nope", name="docs", instruction="x"
                )
            )
            bad_name = error_text(
                await call(
                    session,
                    "add_subtask",
                    parent_task_id=world.parent_id,
                    name="../x",
                    instruction="x",
                )
            )
            return {
                "first": first,
                "again": again,
                "shown": shown,
                "bad_agent": bad_agent,
                "no_parent": no_parent,
                "bad_name": bad_name,
            }

    seen = anyio.run(scenario)
    first, again = seen["first"], seen["again"]
    assert isinstance(first, dict) and isinstance(again, dict)
    assert first["created"] is True and "queued subtask 'tests'" in first["message"]
    assert again["created"] is False and again["message"].startswith("already queued")
    assert again["task"]["id"] == first["task"]["id"]
    shown = seen["shown"]
    assert isinstance(shown, dict)
    assert [s["id"] for s in shown["subtasks"]] == [first["task"]["id"]]

    store = world.store()
    try:
        added = store.tasks.get(first["task"]["id"])
        everything = store.tasks.list()
    finally:
        store.close()
    assert added.depends_on == (world.parent_id,)
    assert set(added.labels) == {"subtask", "backend"}
    assert added.agent == "shell"  # the parent's
    assert added.status is TaskState.PENDING  # the parent has not run yet
    assert added.idempotency_key == subtask_key(world.parent_id, "tests")
    assert len(everything) == 3  # the retry added nothing, nor did the refusals

    assert "unknown agent 'gpt'" in str(seen["bad_agent"])
    assert "shell" in str(seen["bad_agent"])  # the agents there are
    assert "no task t-nope" in str(seen["no_parent"])
    assert "name" in str(seen["bad_name"]) and "letters" in str(seen["bad_name"])


def test_a_viewer_cannot_add_a_subtask_and_is_told_which_role_can(world: World) -> None:
    async def scenario() -> str:
        async with over_stdio(world, "viewer") as session:
            return error_text(
                await call(
                    session,
                    "add_subtask",
                    parent_task_id=world.parent_id,
                    name="tests",
                    instruction="add tests",
                )
            )

    refused = anyio.run(scenario)
    assert "add_subtask needs role operator" in refused
    assert "viewer" in refused
    assert "capataz token create --role operator" in refused
    store = world.store()
    try:
        assert len(store.tasks.list()) == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({}, ("needs a token", "CAPATAZ_TOKEN", "--token-file")),
        ({"CAPATAZ_TOKEN": "cap_not-a-real-token"}, ("unknown or revoked", "token create")),
    ],
)
def test_no_token_or_a_bad_one_is_one_line_and_exit_2(
    world: World, env: dict[str, str], needles: tuple[str, ...]
) -> None:
    result = world.cli("mcp", **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = " ".join(result.stderr.split())
    assert line.startswith("error:")
    for needle in needles:
        assert needle in line
    assert "cap_not-a-real-token" not in result.stderr


def test_a_runner_token_and_an_unreadable_token_file_are_refused(world: World) -> None:
    runner = world.cli("mcp", CAPATAZ_TOKEN=world.tokens["runner"])
    missing = world.cli("mcp", "--token-file", str(world.repo / "no-such-file"))
    for result, needle in ((runner, "runner token"), (missing, "cannot read --token-file")):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert needle in " ".join(result.stderr.split())
    assert world.tokens["runner"] not in runner.stderr


def test_the_token_can_come_from_a_file(world: World) -> None:
    token_file = world.repo / ".capataz" / "mcp-token"
    token_file.write_text(world.tokens["viewer"] + "\n")

    async def scenario() -> list[str]:
        params = StdioServerParameters(
            command=CAPATAZ,
            args=["mcp", "--token-file", str(token_file)],
            env=world.env,
            cwd=world.repo,
        )
        with world.errlog.open("a") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await tool_names(session)

    assert anyio.run(scenario) == READ_TOOLS


def test_a_token_revoked_while_the_agent_runs_stops_working_at_the_next_call(
    world: World,
) -> None:
    def revoke_viewer() -> None:
        store = world.store()
        try:
            viewer = next(t for t in store.tokens.list() if t.name == "test-viewer")
            store.tokens.revoke(viewer.id)
        finally:
            store.close()

    async def scenario() -> tuple[object, str, list[str]]:
        async with over_stdio(world, "viewer") as session:
            before = data(await call(session, "list_tasks"))
            await anyio.to_thread.run_sync(revoke_viewer)
            after = error_text(await call(session, "list_tasks"))
            return before, after, await tool_names(session)

    before, after, tools = anyio.run(scenario)
    assert isinstance(before, dict) and before["total"] == 2
    assert "unknown or revoked" in after and "capataz token create" in after
    assert tools == []
