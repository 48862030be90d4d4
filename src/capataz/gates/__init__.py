"""Gates judge a workspace before and after the agent runs."""

from capataz.gates.runner import GateReport, run_gates

__all__ = ["GateReport", "run_gates"]
