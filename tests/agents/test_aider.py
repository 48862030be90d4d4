"""The real aider CLI (aider-chat 0.86.2, from scripts/install-agents) inside capataz's
sandbox, through `capataz exec`, against the fake OpenAI server on loopback.

The agent is ``preset = "aider"`` with its model and endpoint (tests/agents/aider_env.py):
the preset's flags, its git identity, its key from the vault and network only to the
endpoint. The pipeline feeds aider's output to the preset's reader, so a 401 or a
missing network ends the run as ``blocked`` with AGENT_FAILED and the fix, instead of
aider's own exit 0."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.agents.aider_env import (
    API_KEY,
    AiderRun,
    aider_executable,
    aider_repo,
    exec_aider,
)
from tests.agents.fake_models.openai_chat import FakeOpenAIChat

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

GREETING = "hello from the fake model\n"


@pytest.fixture(autouse=True, scope="module")
def _aider_installed() -> None:
    aider_executable()  # fails (never skips) with the install command when missing


def agent_failed(run: AiderRun) -> dict[str, str]:
    """The run's one AGENT_FAILED violation."""
    found = [v for v in run.result.get("violations") or [] if v["type"] == "AGENT_FAILED"]
    assert len(found) == 1, run.result
    return found[0]


def metrics(run: AiderRun) -> dict[str, object]:
    progress = run.repo / ".capataz" / "progress" / run.task_id / "progress.json"
    found: dict[str, object] = json.loads(progress.read_text())["metrics"]
    return found


def main_tree(repo: Path) -> list[str]:
    done = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "main"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_aider_lands_a_new_file_and_none_of_its_state(tmp_path: Path) -> None:
    fake = FakeOpenAIChat(scenario="edit", path="hello.txt", content=GREETING)
    with fake as endpoint:
        repo = aider_repo(tmp_path, endpoint)
        run = exec_aider(repo, "create hello.txt with a greeting", "aider-edit")
    assert run.returncode == 0, run.stderr
    assert run.result["outcome"] == "landed", run.result
    assert run.show("hello.txt") == GREETING.rstrip("\n")  # the content, not an empty file
    assert run.landed_files() == ["hello.txt"]  # no .aider.chat.history.md, no tags cache
    assert not [path for path in main_tree(repo) if path.startswith(".aider")]

    (request,) = fake.completions
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"  # the vault's key
    assert request.body["model"] == "fake-model"
    used = metrics(run)  # what aider printed it used, read by the preset
    assert used["turns"] == 1 and isinstance(used["tokensOut"], int) and used["tokensOut"] > 0
    assert used["model"] == "openai/fake-model"


def test_aider_rewrites_a_file_the_instruction_names(tmp_path: Path) -> None:
    fake = FakeOpenAIChat(scenario="edit", path="README.md", content=GREETING)
    with fake as endpoint:
        repo = aider_repo(tmp_path, endpoint)
        run = exec_aider(repo, "rewrite README.md as a greeting", "aider-rewrite")
    assert run.result["outcome"] == "landed", run.result
    assert run.landed_files() == ["README.md"]
    assert run.show("README.md") == GREETING.rstrip("\n")
    (request,) = fake.completions  # aider added the named file to the chat from git
    assert "# project" in json.dumps(request.body["messages"])


def test_a_rate_limit_then_an_answer_lands(tmp_path: Path) -> None:
    fake = FakeOpenAIChat(scenario="rate_limited_then_edit", path="hello.txt", content=GREETING)
    with fake as endpoint:
        repo = aider_repo(tmp_path, endpoint)
        run = exec_aider(repo, "create hello.txt with a greeting", "aider-429")
    assert run.result["outcome"] == "landed", run.result
    assert len(fake.completions) == 2
    assert not [v for v in run.result.get("violations") or [] if v["type"] == "AGENT_FAILED"]


def test_a_401_never_lands(tmp_path: Path) -> None:
    with FakeOpenAIChat(scenario="unauthorized") as endpoint:
        repo = aider_repo(tmp_path, endpoint)
        before = main_tree(repo)
        run = exec_aider(repo, "create hello.txt with a greeting", "aider-401")
    assert run.returncode == 1 and run.result["outcome"] == "blocked", run.result
    assert main_tree(repo) == before
    failure = agent_failed(run)
    assert failure["details"].startswith("401 from the model: ")
    assert API_KEY not in failure["details"]  # aider quotes the key; capataz masks it
    assert "capataz secret set OPENAI_API_KEY" in failure["suggestion"]


def test_no_network_never_lands(tmp_path: Path) -> None:
    fake = FakeOpenAIChat(scenario="edit")
    with fake as endpoint:
        # left alone, aider retries an unreachable endpoint for ~80 s and exits 0; the
        # preset's reader stops the run at its first "Connection error."
        repo = aider_repo(tmp_path, endpoint, network=False)
        before = main_tree(repo)
        run = exec_aider(repo, "create hello.txt with a greeting", "aider-offline")
    assert run.returncode == 1 and run.result["outcome"] == "blocked", run.result
    assert main_tree(repo) == before
    assert fake.requests == []  # nothing got out of the sandbox
    failure = agent_failed(run)
    assert failure["details"].startswith("the agent has no network: Connection error.")
    assert "network" in failure["suggestion"]
    assert metrics(run)["agentOutcome"] == "failed"  # stopped by capataz, not aider's exit


def test_a_model_that_never_answers_is_stopped_by_the_idle_watchdog(tmp_path: Path) -> None:
    with FakeOpenAIChat(scenario="hang") as endpoint:
        # (aider would wait 600 s for the answer, then retry; whether the 5 s of silence
        # come while it starts or while it waits, the run is "hung")
        repo = aider_repo(tmp_path, endpoint, idle_timeout="5s")
        run = exec_aider(repo, "create hello.txt with a greeting", "aider-hang")
    assert run.result["outcome"] != "landed"
    progress = repo / ".capataz" / "progress" / "aider-hang" / "progress.json"
    assert json.loads(progress.read_text())["metrics"]["agentOutcome"] == "hung"
