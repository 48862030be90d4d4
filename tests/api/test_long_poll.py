"""The long-poll claim (``POST /runner/claim?wait=``) over a real server on SQLite and
PostgreSQL: held until work arrives, answered null at its deadline, and an old-style
claim answered at once. What the server did is read from its own claim counters
(``/metrics``), never from the clock."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
from tests.api.conftest import Server
from tests.helpers import wait_for

from capataz.runner.protocol import SWEEPER_HEADER


def parse_claims(text: str) -> dict[str, float]:
    """``capataz_runner_claim_requests`` by outcome from a server's ``/metrics`` text,
    and ``waiting``: the claims it holds right now."""
    pattern = r'^capataz_runner_claim_requests_total\{outcome="(\w+)"\} (\S+)$'
    counts = {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}
    waiting = re.search(r"^capataz_runner_claims_waiting (\S+)$", text, re.M)
    assert waiting is not None, text
    counts["waiting"] = float(waiting[1])
    return counts


def claim_counts(server: Server) -> dict[str, float]:
    with server.client("viewer") as api:
        return parse_claims(api.get("/metrics").text)


def _register(api: httpx.Client) -> str:
    answer = api.post("/runner/register", json={"name": "poller", "concurrency": 1})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["runner_id"])


def test_a_waiting_claim_gets_the_task_added_after_it_started(server: Server) -> None:
    store = server.store()
    answers: list[Any] = []
    try:
        with server.client("runner") as api:
            rid = _register(api)

            def long_poll() -> None:
                response = api.post(
                    "/runner/claim", params={"wait": 25}, json={"runner_id": rid}, timeout=60
                )
                answers.append(response)

            poller = threading.Thread(target=long_poll)
            poller.start()
            wait_for(lambda: claim_counts(server)["waiting"] == 1, "the claim is held")
            store.tasks.add("late", "x", id="late")
            poller.join(timeout=60)
        (response,) = answers
        assert response.status_code == 200, response.text
        assert response.json()["data"]["id"] == "late"
        counts = claim_counts(server)
        # One request, answered after waiting: the same claim got it, not a retry.
        assert counts == {"claimed_after_wait": 1, "waiting": 0}, counts
        assert store.tasks.get("late").lease_owner == rid
    finally:
        store.close()


def test_the_deadline_answers_nothing_and_no_wait_answers_at_once(server: Server) -> None:
    with server.client("runner") as api:
        rid = _register(api)
        timed_out = api.post("/runner/claim", params={"wait": 1}, json={"runner_id": rid})
        assert timed_out.status_code == 200 and timed_out.json()["data"] is None
        assert claim_counts(server) == {"empty_after_wait": 1, "waiting": 0}
        at_once = api.post("/runner/claim", json={"runner_id": rid})  # an older runner
        assert at_once.status_code == 200 and at_once.json()["data"] is None
        # It sweeps itself: its runners need not call /runner/sweep.
        assert at_once.headers[SWEEPER_HEADER] == "on"
        assert claim_counts(server) == {"empty_after_wait": 1, "empty": 1, "waiting": 0}
        capped = api.post("/runner/claim", params={"wait": -1}, json={"runner_id": rid})
        assert capped.status_code == 422
