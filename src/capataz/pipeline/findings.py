"""One run's mutable state, and what the run itself found before any gate looked.

The supervisor hands :class:`RunState` from step to step. :func:`collected_violations`
gathers what only the run can know — the agent's own failure or budget, denied
connections, nested repositories it left, protected paths it touched, secrets in the
result, context it may not publish, a PRD task's result touching its PRD's Out of Scope
list — so that the post-gates judge them together with the policy's findings, in one
verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from capataz.config import Config
from capataz.context.flow import Publication
from capataz.errors import CapatazError
from capataz.gates.network import agent_network_key, network_violations
from capataz.gates.protected import protected_path_violations, protected_patterns
from capataz.gates.scope import out_of_scope_violations
from capataz.gates.secrets import secret_leak_violations
from capataz.models import Violation, ViolationType
from capataz.pipeline.agent_watch import AgentWatch
from capataz.pipeline.interface import RunSpec
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.progress_state import StepRecord
from capataz.pipeline.runlog import RunLog
from capataz.prd.branch import prd_at
from capataz.sandbox.base import ExecResult
from capataz.workspace.changes import ChangeSet
from capataz.workspace.isolated import Workspace
from capataz.workspace.repo import Repository

__all__ = ["RunState", "collected_violations", "out_of_scope"]


@dataclass
class RunState:
    """Mutable state of one run, handed from step to step."""

    spec: RunSpec
    progress: ProgressDir
    workspace: Workspace
    log: RunLog
    result: str | None = None
    changes: ChangeSet | None = None
    agent: ExecResult | None = None
    violations: list[Violation] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    nested_git: list[str] = field(default_factory=list)
    published: Publication = field(default_factory=Publication)
    watch: AgentWatch | None = None  # the agent's run as its preset reads it


def collected_violations(run: RunState, config: Config, repo: Repository) -> list[Violation]:
    """What the agent's run and the collect step found, before any gate looks."""
    found = run.watch.violations(run.agent, config.sandbox.expose) if run.watch else []
    found += network_violations(
        run.agent, key=agent_network_key(run.spec.agent), policy=config.policy
    )
    nested = [*run.nested_git, *(run.changes.gitlinks if run.changes else ())]
    found += [
        Violation(
            type=ViolationType.EMBEDDED_REPOSITORY,
            severity=config.policy.severity_of(ViolationType.EMBEDDED_REPOSITORY),
            file=path,
            details=f"{path} is a nested git repository; capataz removed it before committing",
            suggestion="commit the files themselves, not a nested repository",
        )
        for path in nested
    ]
    if run.changes is not None:
        protected = protected_patterns(config.project.progress_dir)
        found += protected_path_violations(run.changes, protected)
        found += secret_leak_violations(run.workspace.git, run.workspace.base, run.result)
    return found + run.published.violations + out_of_scope(repo, config, run)


def out_of_scope(repo: Repository, config: Config, run: RunState) -> list[Violation]:
    """``OUT_OF_SCOPE`` violations of a PRD task's run (none for other tasks, or with
    ``[prd] out_of_scope = "off"``). A PRD that cannot be read at the base commit is
    noted in the run's log and not checked: the task was queued from it, so this is a
    PRD removed or broken on the branch since."""
    ref = run.spec.prd
    severity = config.prd.out_of_scope_severity
    if ref is None or severity is None:
        return []
    try:
        prd = prd_at(repo, run.workspace.base, ref.path)
    except CapatazError as exc:
        run.log.note("capataz", f"out-of-scope check skipped: {exc.message}")
        return []
    ac = next((ac for ac in prd.criteria if ac.id == ref.ac_id), None)
    if ac is None or not prd.out_of_scope:
        return []
    said = "\n".join([ac.title, *(item.text for item in ac.items), *ac.notes])
    return out_of_scope_violations(
        prd.out_of_scope, source=ref.path, criterion=said, changes=run.changes, severity=severity
    )
