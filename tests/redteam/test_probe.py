"""`capataz doctor --probe` ships the red-team tier's escape attempts to users."""

from __future__ import annotations

import json

from tests.redteam.conftest import Attacker

from capataz.config import parse_config
from capataz.setup.probes import PROBES, run_probes


def test_every_probe_is_contained_by_the_sandbox(attacker: Attacker) -> None:
    done = attacker.capataz("doctor", "--probe", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [p["name"] for p in report["probes"]] == [p.name for p in PROBES]
    escaped = [p for p in report["probes"] if not p["contained"]]
    assert escaped == []


def test_the_probes_see_an_escape_when_there_is_no_sandbox() -> None:
    """The table is only worth something if a probe can fail: without a sandbox, reading
    the repository, capataz's state and the host's loopback all succeed."""
    config = parse_config('[project]\nsandbox = "none"\n[agents.shell]\ncommand = ["sh"]\n')
    harmless = [p for p in PROBES if p.name in ("repository read", "capataz state", "network")]
    results = run_probes(config, config.agents["shell"], harmless)
    assert [(r.name, r.contained) for r in results] == [
        ("repository read", False),
        ("capataz state", False),
        ("network", False),
    ]
    assert all("ESCAPED" in r.detail or "reached" in r.detail for r in results)


def test_an_allowlisted_agent_is_still_contained() -> None:
    """An agent with an allowlist reaches only what it lists: the network probe's
    listener on the host's loopback is not on its list."""
    config = parse_config(
        '[agents.claude]\ncommand = ["sh"]\nnetwork = ["api.anthropic.com", "127.0.0.1:1"]\n'
    )
    network = [p for p in PROBES if p.name == "network"]
    results = run_probes(config, config.agents["claude"], network)
    assert [(r.name, r.contained) for r in results] == [("network", True)], results
