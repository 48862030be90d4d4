"""Runner daemons: claim tasks from the durable queue and run them through the pipeline."""

from capataz.runner.execution import TaskExecution, state_for
from capataz.runner.worker import Runner

__all__ = ["Runner", "TaskExecution", "state_for"]
