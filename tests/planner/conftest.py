"""The planner against the fake OpenAI-compatible server (real HTTP on loopback, the
real ``openai`` SDK), over a store on SQLite: the store's own tests cover both
databases (tests/store/test_directives.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capataz.config import Config, parse_config
from capataz.store import Store

AGENTS = """
[agents.coder]
command = ["true"]
description = "writes code"
"""


def planner_config(endpoint: str, extra: str = "") -> Config:
    return parse_config(
        f'[planner]\nendpoint = "{endpoint}"\nmodel = "fake-planner"\ntimeout = "5s"\n'
        f"max_retries = 2\n{extra}\n{AGENTS}"
    )


def plan_json(*directives: dict[str, Any]) -> str:
    return json.dumps({"directives": list(directives)})


def task(name: str, *deps: str, agent: str | None = None, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"Do {name}",
        "instruction": f"echo {name}",
        "agent": agent,
        "depends_on": list(deps),
        "labels": [],
        "priority": None,
        **more,
    }


GOOD = plan_json(
    {
        "title": "Build, then test",
        "rationale": "tests need the build",
        "tasks": [task("build"), task("test", "build", agent="coder"), task("docs", "test")],
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'capataz.db'}")
    yield opened
    opened.close()
