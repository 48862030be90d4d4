"""Schemathesis against the served OpenAPI document: generated requests, valid and
invalid, to every operation of a real ``capataz serve``, as an admin and with no token.

No answer may be a 5xx, every answer must be one the document declares (status, content
type, body schema), and invalid input must be refused with a 4xx. Bounded and
reproducible: a fixed number of examples per operation, derandomised, no deadline (a
loaded CI machine is slow, not wrong), no example database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from tests.api.conftest import Server

from capataz.store import RunDetails, TaskState

# Cases per operation: valid ones, then invalid ones. Without a token everything but
# /health is the same 401, so a few cases suffice.
ADMIN_EXAMPLES = (20, 12)
ANONYMOUS_EXAMPLES = (5, 3)
CONFIG = "[server]\nrate_burst = 100000\nrate_limit = 100000\nallow_destructive = true\n"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Endless answers (Server-Sent Events): fuzzed only without a token, refused at once.
STREAMS = frozenset({"GET /events"})
# Long polls: valid cases ask for no wait (an empty queue would otherwise hold each one
# up to 30 s); tests/api/test_long_poll.py covers the wait.
LONG_POLLS: dict[str, dict[str, Any]] = {"POST /runner/claim": {"wait": 0}}
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE


@pytest.fixture
def queue_url(tmp_path: Path) -> str:
    """SQLite only: the fuzzing exercises the API's input handling, which is the same
    over both databases; the endpoint tests cover PostgreSQL."""
    return f"sqlite:///{tmp_path / 'queue.db'}"


def _seed(server: Server) -> dict[str, str]:
    """Real ids for the path parameters, so generated requests also reach the code
    behind the 404s: a ready task, an escalated one, a finished run and a runner."""
    store = server.store()
    try:
        done = store.tasks.add("done", "true", id="t-done")
        store.tasks.add("ready", "true", id="t-ready")
        runner = store.runners.register("fuzz", hostname="h", pid=1, concurrency=1)
        claimed = store.leases.claim(runner)
        assert claimed is not None and claimed.id == done.id
        details = RunDetails(outcome="landed", exit_code=0, wall_seconds=0.1)
        assert store.leases.complete(
            claimed.id, claimed.fencing_token, TaskState.DONE, details=details
        )
        store.tasks.add("asks", "true", id="t-asks")
        asked = store.leases.claim(runner)
        assert asked is not None
        assert store.escalations.open(asked.id, asked.fencing_token, "needs a human")
        return {"task_id": "t-asks", "run_id": claimed.run_id, "runner_id": runner}
    finally:
        store.close()


def _exercise(strategy: Any, examples: int, call: Callable[[Any], None]) -> None:
    """``call`` on ``examples`` cases of ``strategy``: derandomised (the same cases on
    every run), no deadline (a loaded machine is slow, not wrong), no example database."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        call(case)

    run()


def _fuzz(
    server: Server, token: str | None, seeded: dict[str, str], examples: tuple[int, int]
) -> list[str]:
    """Run every operation's generated cases, valid and invalid; returns one line per
    failing operation (all of them, not just the first) so a report shows the whole
    damage. The token goes into generation as a fixed header, so an "invalid" case is
    never just one whose Authorization header was dropped."""
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures: list[str] = []
    calls: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in STREAMS and token:
            continue  # an accepted request streams until the client hangs up
        names = {p.name for p in operation.path_parameters}
        known = {name: value for name, value in seeded.items() if name in names}
        for mode, count in zip((POSITIVE, NEGATIVE), examples, strict=True):
            fixed: dict[str, Any] = {"headers": headers} if headers else {}
            if mode is POSITIVE and operation.label in LONG_POLLS:
                fixed["query"] = LONG_POLLS[operation.label]
            strategy = operation.as_strategy(generation_mode=mode, **fixed)
            checks = list(CHECKS)
            if mode is POSITIVE and known:
                strategy |= operation.as_strategy(path_parameters=known, **fixed)
            elif mode is NEGATIVE and token:
                checks.append(negative_data_rejection)

            def call(case: Any, checks: list[Any] = checks) -> None:
                calls.append(case.operation.label)
                response = case.call(base_url=server.base, headers=headers, timeout=10)
                case.validate_response(response, checks=checks)
                if not token and case.operation.label != "GET /health":
                    # Refused before anything else; only a body that is not JSON at all
                    # is refused first, by the parser (422 on "body").
                    refused = response.status_code == 401 or (
                        response.status_code == 422
                        and response.json()["error"]["message"].startswith("body")
                    )
                    assert refused, (response.status_code, response.text)

            try:
                _exercise(strategy, count, call)
            except Unsatisfiable:
                # Nothing to make invalid (GET /health takes no input): no case to run.
                assert mode is NEGATIVE, operation.label
            except (AssertionError, BaseExceptionGroup) as exc:  # collect all, then fail
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert len(calls) > 100, failures  # the document was read and operations exercised
    return failures


@pytest.fixture
def fuzz_server(start_server: Callable[..., Server]) -> tuple[Server, dict[str, str]]:
    server = start_server(CONFIG)
    return server, _seed(server)


def test_no_generated_request_gets_a_5xx_or_an_undeclared_answer_as_admin(
    fuzz_server: tuple[Server, dict[str, str]],
) -> None:
    server, seeded = fuzz_server
    failures = _fuzz(server, server.tokens["admin"], seeded, ADMIN_EXAMPLES)
    assert not failures, "\n\n".join(failures)
    with server.client("admin") as client:
        assert client.get("/health").status_code == 200  # still serving


def test_without_a_token_every_generated_request_is_refused_cleanly(
    fuzz_server: tuple[Server, dict[str, str]],
) -> None:
    server, seeded = fuzz_server
    failures = _fuzz(server, None, seeded, ANONYMOUS_EXAMPLES)
    assert not failures, "\n\n".join(failures)
    anonymous = httpx.get(f"{server.base}/ops/tasks", timeout=10)
    assert anonymous.status_code == 401
