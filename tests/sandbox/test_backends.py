"""Choosing a backend by name, checking it works here, and the unsandboxed backend."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capataz.config import SandboxOptions
from capataz.errors import CapatazError, SandboxError
from capataz.sandbox import SANDBOXES, BwrapSandbox, UnsandboxedSandbox, get_sandbox
from capataz.sandbox.base import ExecOutcome, Sandbox

Run = Callable[..., Any]


def test_backends_by_name() -> None:
    assert set(SANDBOXES) == {"bwrap", "none"}
    assert isinstance(get_sandbox("bwrap", SandboxOptions()), BwrapSandbox)
    assert isinstance(get_sandbox("none", SandboxOptions()), UnsandboxedSandbox)
    assert get_sandbox("bwrap", SandboxOptions()).name == "bwrap"
    assert get_sandbox("none", SandboxOptions()).name == "none"


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(SandboxError) as caught:
        get_sandbox("docker", SandboxOptions())
    assert isinstance(caught.value, CapatazError)
    assert "'docker'" in caught.value.message
    assert "'bwrap'" in caught.value.message
    assert "'none'" in caught.value.message
    assert caught.value.fix


def test_both_backends_work_here(sandbox: Sandbox) -> None:
    assert sandbox.check() == []


def test_a_missing_workspace_is_an_error(run: Run, sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not a directory"):
        run(sandbox, "true", workspace=tmp_path / "missing")


def test_unsandboxed_runs_in_the_workspace_and_kills_what_it_leaves(
    run: Run,
    unsandboxed: UnsandboxedSandbox,
    workspace: Path,
    host_pids: Callable[[str], list[int]],
) -> None:
    marker = f"3003.{random.randrange(10**8)}"
    ran = run(unsandboxed, f"pwd; echo made > file; sleep {marker} & sleep 0.2")
    assert ran.result.outcome is ExecOutcome.OK
    assert ran.out == [str(workspace)]
    assert (workspace / "file").read_text() == "made\n"
    assert [p for p in ran.result.leftover_processes if p.startswith("sleep (pid ")]
    assert host_pids(marker) == []
