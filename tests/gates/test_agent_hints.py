"""Why an agent could not start: the hidden file named, the expose that shows it."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from capataz.gates.agent_hints import memory_hint, missing_command_hint


@pytest.fixture
def home_dir() -> Iterator[Path]:
    """A directory under the real home (/root or /home/...), which the sandbox masks."""
    root = Path.home() / f"capataz-test-hints-{os.urandom(4).hex()}"
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_an_npm_bin_link_names_the_package_dir_to_expose(home_dir: Path) -> None:
    package = home_dir / "node_modules" / "@acme" / "agent" / "bin"
    package.mkdir(parents=True)
    (package / "agent.js").write_text("#!/usr/bin/env node\n")
    bin_dir = home_dir / "node_modules" / ".bin"
    bin_dir.mkdir()
    (bin_dir / "agent").symlink_to("../@acme/agent/bin/agent.js")
    details, fix = missing_command_hint(["agent", "-p", "x"], search_path=f"{bin_dir}:/usr/bin")
    mask = "/root" if str(home_dir).startswith("/root/") else "/home"
    assert details == (
        f"the agent's command cannot be found inside the sandbox: {bin_dir / 'agent'} is "
        f"under {mask}, which the sandbox masks (an empty directory inside)"
    )
    assert (
        fix
        == f'show it read-only to agents: [sandbox] expose = ["{home_dir / "node_modules"}"] in capataz.toml'
    )


def test_a_venv_script_names_its_interpreters_install_too(home_dir: Path) -> None:
    python = home_dir / "pyenv" / "versions" / "3.12" / "bin" / "python3.12"
    python.parent.mkdir(parents=True)
    python.write_text("")
    venv_bin = home_dir / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(python)
    tool = venv_bin / "aider"
    tool.write_text(f"#!{venv_bin / 'python'}\nimport aider\n")
    details, fix = missing_command_hint([str(tool)])
    assert str(tool) in details
    venv, pyenv = home_dir / "venv", home_dir / "pyenv" / "versions" / "3.12"
    assert (
        fix
        == f'show it read-only to agents: [sandbox] expose = ["{venv}", "{pyenv}"] in capataz.toml'
    )


def test_an_exposed_command_is_not_blamed(home_dir: Path) -> None:
    tool = home_dir / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    details, fix = missing_command_hint([str(tool)], expose=[str(home_dir)])
    assert details.startswith("a command the agent ran was not found inside the sandbox")
    assert "artifacts/run.log" in fix


def test_a_command_on_no_path_says_so() -> None:
    details, fix = missing_command_hint(["no-such-agent-cli"])
    assert details == (
        "the agent's command 'no-such-agent-cli' is not on the sandbox's PATH "
        "(/usr/local/bin:/usr/bin:/bin)"
    )
    assert "absolute path" in fix


def test_a_command_that_does_not_exist_is_named() -> None:
    target = "/nonexistent-capataz/agent"
    details, fix = missing_command_hint([target])
    assert details == f"the agent's command cannot be found: {target} does not exist"
    assert fix.startswith("install it")


def test_memory_hint_only_for_a_crash_at_start_under_a_limit() -> None:
    hint = memory_hint(signal.SIGILL, 2 * 1024**3, 0.5)
    assert hint is not None and "SIGILL" in hint and "memory = 2.0 GiB" in hint
    assert memory_hint(signal.SIGILL, None, 0.5) is None  # unlimited already
    assert memory_hint(signal.SIGILL, 2 * 1024**3, 600.0) is None  # long after start
    assert memory_hint(signal.SIGTERM, 2 * 1024**3, 0.5) is None


def test_a_command_inside_the_hidden_repository_names_the_repository() -> None:
    repo = "/srv/capataz-test-hints-repo"  # no mask of its own: only the run hides it
    details, fix = missing_command_hint([f"{repo}/.venv/bin/agent"], hide=[repo])
    assert details == (
        f"the agent's command cannot be found inside the sandbox: {repo}/.venv/bin/agent is "
        f"under {repo}, which the sandbox masks (an empty directory inside)"
    )
    assert fix == (
        f'show it read-only to agents: [sandbox] expose = ["{repo}/.venv"] in capataz.toml'
    )
    assert "masks" not in missing_command_hint([f"{repo}/.venv/bin/agent"])[0]
