"""`capataz demo`: a scratch repository and four tasks that show every outcome in under a
minute — one lands, one is blocked by policy and rolled back, one escalates and a
reviewer answers it, one hangs and is killed."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from capataz.config import load_config
from capataz.models import Outcome
from capataz.pipeline.escalation import submit_decision
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.supervisor import Listener, RunReport, RunSpec, Supervisor
from capataz.workspace.repo import Repository, create_repository

__all__ = ["DEMO_TASKS", "DemoTask", "create_demo_repo", "run_demo_task"]

DEMO_CONFIG = """\
[project]
target_branch = "main"
escalation_timeout = "30s"

[agents.shell]
command = ["bash", "-c", "{instruction}"]
timeout = "30s"
idle_timeout = "2s"
memory = "1GiB"

[[gates]]
name = "readme-kept"
phase = "post"
run = "test -f README.md"
severity = "critical"

[policy]
forbidden_paths = ["legacy/**"]
max_changed_files = 3
"""


@dataclass(frozen=True)
class DemoTask:
    task_id: str
    title: str
    instruction: str
    expected: Outcome
    reviewer_answer: str | None = None  # answered from "another shell" after a moment


DEMO_TASKS = [
    DemoTask(
        "demo-1-lands",
        "add a greeting",
        "echo 'print(\"hello from an agent\")' > hello.py && echo wrote hello.py",
        Outcome.LANDED,
    ),
    DemoTask(
        "demo-2-blocked",
        "touch legacy code",
        "echo 'patched = True' >> legacy/billing.py && echo patched legacy/billing.py",
        Outcome.BLOCKED,
    ),
    DemoTask(
        "demo-3-escalates",
        "write five notes",
        'mkdir -p notes && for i in 1 2 3 4 5; do echo "note $i" > notes/$i.md; done; ls notes',
        Outcome.LANDED,
        reviewer_answer="approve",
    ),
    DemoTask("demo-4-hangs", "wait forever", "echo 'thinking...'; sleep 600", Outcome.BLOCKED),
]


def create_demo_repo(path: Path) -> Repository:
    files = {
        "README.md": "# demo project\n",
        "legacy/billing.py": "# do not touch: legacy billing\n",
        "capataz.toml": DEMO_CONFIG,
        ".gitignore": ".capataz/\n",
    }
    return create_repository(path, files, author="demo")


def run_demo_task(repo: Repository, task: DemoTask, listener: Listener) -> RunReport:
    config = load_config(repo.root)
    timer: threading.Timer | None = None
    if task.reviewer_answer:
        progress = ProgressDir(repo.root / config.project.progress_dir, task.task_id)
        answer = task.reviewer_answer

        def reviewer() -> None:
            submit_decision(
                progress, answer, note="looks fine to the demo reviewer", decided_by="demo reviewer"
            )

        timer = threading.Timer(1.5, reviewer)
    supervisor = Supervisor(repo, config, listener=_start_on_escalation(listener, timer))
    try:
        return supervisor.execute(
            RunSpec(
                task_id=task.task_id, instruction=task.instruction, agent="shell", title=task.title
            )
        )
    finally:
        if timer is not None:
            timer.cancel()


def _start_on_escalation(listener: Listener, timer: threading.Timer | None) -> Listener:
    def wrapped(event: object) -> None:
        from capataz.pipeline.supervisor import Event

        assert isinstance(event, Event)
        if timer is not None and event.kind == "escalation" and event.status == "opened":
            timer.start()
        listener(event)

    return wrapped
