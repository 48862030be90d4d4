"""Time from `capataz exec` to an outcome with a real agent CLI against a fake model API.

Issue 11's closing figures, per preset: an edit landed, a 401 reported as the clear
failure it is, and no network reported as such (the agent's ``network = false``).
Each row is the whole `capataz exec` command as a user runs it (Python start-up,
sandbox, the real CLI, gates, landing or rollback). Prints figures; asserts nothing.

    python bench/agent_presets.py claude-code [--runs 3]

The CLIs come from scripts/install-agents (CAPATAZ_AGENT_TOOLS).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.agents.*

from tests.agents.harness import PresetProject

# preset -> the fake model server it talks to ("module:Class")
FAKES = {
    "claude-code": "tests.agents.fake_models.anthropic:FakeAnthropic",
}
CASES = [
    ("landed", "edit", {}),
    ("401 failure", "unauthorized", {}),
    ("no-network failure", "edit", {"network": False}),
]


def fake_server(preset: str, scenario: str) -> Any:
    module, _, name = FAKES[preset].partition(":")
    return getattr(importlib.import_module(module), name)(scenario)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(FAKES))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.preset}: `capataz exec` to its outcome, {args.runs} run(s) each")
    with tempfile.TemporaryDirectory(prefix="capataz-bench-agents-") as tmp:
        for label, scenario, keys in CASES:
            times: list[float] = []
            last: dict[str, Any] = {}
            for run in range(args.runs):
                with fake_server(args.preset, scenario) as url:
                    root = Path(tmp) / f"{label.split()[0]}-{run}"
                    project = PresetProject(root, args.preset, url, **keys)
                    ran = project.exec("write hello.txt", f"bench-{run}")
                times.append(ran.seconds)
                last = ran.report
            reasons = [v["details"] for v in last.get("violations") or []]
            print(
                f"  {label:<20} median {statistics.median(times):6.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in times)})  "
                f"outcome {last.get('outcome')}"
            )
            for reason in reasons:
                print(f"  {'':<20} reason: {reason}")


if __name__ == "__main__":
    main()
