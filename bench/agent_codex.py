"""Time from ``capataz exec`` to landed, or to a clear failure, with the real Codex CLI.

The issue's closing note asks, per preset: the time from ``capataz exec`` to landed
against the fake server, and the time to a clear failure for a 401 and for no network.
Each scenario runs the real ``codex`` (scripts/install-agents) in capataz's sandbox
against tests/agents/fake_models/openai_responses.py, through the same harness as the
acceptance tests. Prints figures; asserts nothing.

Columns: ``exec`` is the whole ``capataz exec`` (process start to exit: CLI start-up,
workspace, sandbox, agent, gates, landing); ``agent`` is Codex's own wall time in the
sandbox; ``reader`` is when the codex preset's reader, fed the run log, first reports
the failure, counted from the start of the execute step (what the run will take once the
reader stops the agent: the pipeline wiring is another piece of work).

    python bench/agent_codex.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.agents.codex_harness import (
    ExecResult,
    codex_tools,
    run_scenario,
    timed_agent_lines,
)

from capataz.agents.presets.codex import CodexReader

SCENARIOS = [  # (label, fake scenario, network)
    ("edit → landed", "edit", True),
    ("429 then edit → landed", "rate_limited_then_edit", True),
    ("401 → failure", "unauthorized", True),
    ("no network → failure", "edit", False),
]


def reader_seconds(result: ExecResult) -> float | None:
    """Seconds from the execute step's start to the line where the reader fails."""
    execute = next(s for s in result.report["steps"] if s["phase"] == "execute")
    started = datetime.fromisoformat(execute["startedAt"])
    run_log = Path(result.report["progress_dir"]) / "artifacts" / "run.log"
    reader = CodexReader()
    for at, stream, text in timed_agent_lines(run_log):
        reader.feed(stream, text)
        if reader.failure is not None:
            return (at - started).total_seconds()
    return None


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s" if values else "     —  "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    codex_tools()
    print(f"codex preset, {args.runs} runs each, medians")
    print(f"{'scenario':26} {'outcome':10} {'exec':>9} {'agent':>9} {'reader':>9}")
    for label, scenario, network in SCENARIOS:
        execs: list[float] = []
        agents: list[float] = []
        readers: list[float] = []
        outcomes: set[str] = set()
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="capataz-bench-codex-") as tmp:
                result, _, _ = run_scenario(Path(tmp), scenario, network=network)  # type: ignore[arg-type]
                outcomes.add(result.outcome)
                execs.append(result.seconds)
                agents.append(float(result.report["agent"]["wall_seconds"]))
                failed_at = reader_seconds(result)
                if failed_at is not None:
                    readers.append(failed_at)
        outcome = ",".join(sorted(outcomes))
        print(f"{label:26} {outcome:10} {fmt(execs)} {fmt(agents)} {fmt(readers)}")


if __name__ == "__main__":
    main()
