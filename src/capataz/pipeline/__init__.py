"""The supervised pipeline: one task, prepare to finalize, and its evidence."""

from capataz.pipeline.supervisor import Event, Listener, RunHooks, RunReport, RunSpec, Supervisor

__all__ = ["Event", "Listener", "RunHooks", "RunReport", "RunSpec", "Supervisor"]
