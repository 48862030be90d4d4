"""A run with a network allowlist through the whole pipeline: each connection the
proxy decided is in the run's log, and a denied one is a NETWORK_DENIED violation that
says which key allows it (its severity from [policy.severity], low here so the run
continues without a human)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from capataz.config import parse_config
from capataz.models import Outcome
from capataz.pipeline.supervisor import RunSpec, Supervisor
from capataz.workspace.repo import Repository

CONFIG = """
[agents.fetcher]
command = ["bash", "-c", "{instruction}"]
timeout = "30s"
idle_timeout = "20s"
memory = "1GiB"
network = ["api.example.com:443"]

[policy.severity]
NETWORK_DENIED = "low"
"""

# bash alone, through the proxy port the bridge listens on (HTTPS_PROXY's).
INSTRUCTION = r"""
port=${HTTPS_PROXY##*:}
exec 3<>/dev/tcp/127.0.0.1/$port
printf 'CONNECT evil.example:443 HTTP/1.1\r\n\r\n' >&3
read -r status <&3
echo "$status" > answer.txt
"""


def test_denied_connections_are_logged_and_become_violations(
    make_repo: Callable[..., Path],
) -> None:
    repo = Repository.discover(make_repo())
    report = Supervisor(repo, parse_config(CONFIG)).execute(
        RunSpec(task_id="net1", instruction=INSTRUCTION, agent="fetcher")
    )
    assert report.outcome is Outcome.LANDED, report
    assert (repo.root / "answer.txt").read_text().startswith("HTTP/1.1 403")
    assert report.progress_dir is not None
    log = (report.progress_dir / "artifacts" / "run.log").read_text()
    assert (
        "[network:capataz] denied evil.example:443 (CONNECT; not in [agents.fetcher] network)"
        in log
    )
    violations = [
        json.loads(line)
        for line in (report.progress_dir / "violations.jsonl").read_text().splitlines()
    ]
    denied = [v for v in violations if v["type"] == "NETWORK_DENIED"]
    assert len(denied) == 1
    assert denied[0]["severity"] == "low"
    assert denied[0]["details"] == (
        "denied connection to evil.example:443: not in [agents.fetcher] network"
    )
    assert '[agents.fetcher] network = [..., "evil.example:443"]' in denied[0]["suggestion"]
