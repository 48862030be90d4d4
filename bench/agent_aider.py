"""The real aider CLI through `capataz exec` against the fake model server: how long
each outcome takes, and what aider printed on the way (issue 11's closing note).

For each scenario it prints the wall time of the whole `capataz exec` and, for the
failures, when aider's output first told the aider preset's reader that the run had
failed (the time a run takes once the pipeline stops on the reader's failure), with the
reason the reader gave. ``--record DIR`` also saves each run's agent lines (``stream``,
tab, text) as ``DIR/<scenario>.txt``: the recorded real output the reader's unit tests
read (tests/agents/recorded/aider/).

Run from the repository root after scripts/install-agents:
``python bench/agent_aider.py [--only NAME ...] [--record tests/agents/recorded/aider]``.
The "rate-limited" scenario takes about 70 s (aider's own retries, which capataz lets
run: each is a 429 the next attempt may get past).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* helpers

from tests.agents.aider_env import agent_lines, aider_repo, exec_aider
from tests.agents.fake_models.openai_chat import FakeOpenAIChat, Scenario

from capataz.agents.presets.aider import AiderReader


@dataclass(frozen=True)
class Case:
    name: str
    scenario: Scenario
    instruction: str = "create hello.txt with a greeting"
    model: str = "fake-model"
    network: bool = True
    repo: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("edit", "edit"),
    Case("edit-priced-model", "edit", model="gpt-4o"),
    Case("unauthorized", "unauthorized"),
    Case("no-network", "edit", network=False),
    Case("model-not-found", "model_not_found"),
    Case("rate-limited-then-edit", "rate_limited_then_edit"),
    Case("rate-limited", "rate_limited"),
    Case(
        "refused-edit",
        "refused_edit",
        instruction="change the greeting in README.md",
        model="gpt-4o",  # a model aider gives its SEARCH/REPLACE (diff) format
    ),
]


def _time_of(raw: str) -> datetime:
    return datetime.strptime(raw[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def failed_after(repo: Path, task_id: str, started: datetime) -> tuple[float | None, str]:
    """Seconds from the start of `capataz exec` to the line on which the reader failed
    the run (None if it did not), and the reader's reason (or its usage)."""
    log = repo / ".capataz" / "progress" / task_id / "artifacts" / "run.log"
    reader = AiderReader()
    for raw in log.read_text(encoding="utf-8").splitlines():
        _, _, rest = raw.partition(" ")
        for stream in ("out", "err"):
            tag = f"[agent:{stream}]"
            if rest.startswith(tag):
                reader.feed(stream, rest.removeprefix(tag).removeprefix(" "))
                if reader.failure is not None:
                    seconds = (_time_of(raw) - started).total_seconds()
                    return seconds, reader.failure.reason
    progress = json.loads((log.parents[1] / "progress.json").read_text(encoding="utf-8"))
    reader.finish(progress["metrics"]["agentExitCode"])
    if reader.failure is not None:
        return None, f"(at exit) {reader.failure.reason}"
    usage = reader.usage
    return None, (
        f"usage: {usage.tokens_in} in, {usage.tokens_out} out, cost {usage.cost_usd}, "
        f"model {usage.model}, turns {usage.turns}"
    )


def run(case: Case, record: Path | None) -> None:
    fake = FakeOpenAIChat(scenario=case.scenario, path="hello.txt")
    if case.scenario == "refused_edit":
        fake.path = "README.md"
    with tempfile.TemporaryDirectory(prefix="capataz-bench-aider-") as tmp, fake as endpoint:
        repo = aider_repo(Path(tmp), endpoint, model=case.model, network=case.network)
        started = datetime.now(UTC)
        done = exec_aider(repo, case.instruction, "bench")
        at, reason = failed_after(repo, "bench", started)
        outcome = done.result.get("outcome")
        landed = ", ".join(done.landed_files()) or "-"
        print(f"{case.name:24} exec {done.seconds:6.1f} s  {outcome:10} landed: {landed}")
        failure = f"{at:6.1f} s" if at is not None else "     -"
        print(f"{'':24} reader fails at {failure}: {reason}")
        print(f"{'':24} requests to the fake: {len(fake.completions)}")
        if record is not None:
            record.mkdir(parents=True, exist_ok=True)
            lines = agent_lines(repo, "bench")
            text = "".join(f"{stream}\t{line}\n" for stream, line in lines)
            (record / f"{case.name}.txt").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=[c.name for c in CASES])
    parser.add_argument("--record", type=Path, help="save each run's agent lines here")
    args = parser.parse_args()
    for case in CASES:
        if not args.only or case.name in args.only:
            run(case, args.record)


if __name__ == "__main__":
    main()
