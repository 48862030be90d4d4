"""A PRD task's criterion ticked once its result has landed (the out-of-scope check is
one of the run's findings, :func:`capataz.pipeline.findings.out_of_scope`).

A run knows its criterion from :attr:`RunSpec.prd` (the runner reads it from the task's
idempotency key, ``prd:<path>#ACn``). The PRD is read at the target branch's tip, where
the tick is committed, through capataz's own git, never through the agent's tree.

The tick is capataz's commit, not the agent's, made under the landing lock by
:func:`capataz.prd.branch.tick_on_branch`; it is bookkeeping, so a tick that cannot be
made (the branch's checkout is dirty, the PRD is gone or no longer parses) never fails
or un-lands the run: it is recorded as pending (``prdTick`` in progress.json, a line in
the run's log, a sentence in its message) and ``capataz prd tick`` catches up later.
"""

from __future__ import annotations

from capataz.config import Config
from capataz.errors import CapatazError
from capataz.models import Outcome, utcnow
from capataz.pipeline.findings import RunState
from capataz.pipeline.interface import Event, Listener
from capataz.pipeline.progress_state import PrdTick
from capataz.prd.branch import tick_on_branch
from capataz.sandbox.base import OutputLine
from capataz.workspace.repo import Repository

__all__ = ["tick_landed"]


def tick_landed(
    repo: Repository, config: Config, run: RunState, outcome: Outcome, listener: Listener
) -> str:
    """After finalize: tick the run's criterion on the target branch when its result
    landed there. The sentence to add to the run's message ("" when there is nothing to
    say: not a PRD task, not landed, or ticked)."""
    ref = run.spec.prd
    if ref is None or outcome is not Outcome.LANDED:
        return ""
    branch = config.project.target_branch
    message = f"prd: tick {ref.ac_id} in {ref.path} (task {run.spec.task_id} landed)"
    try:
        done = tick_on_branch(repo, branch, ref.path, [ref.ac_id], message)
        refused = done.refused if done is not None else None
    except CapatazError as exc:
        done, refused = None, exc.message
    commit = done.commit if done is not None else None
    state = run.progress.state
    state.prd_tick = PrdTick(
        prd=ref.path, ac=ref.ac_id, commit=commit, pending=refused, at=utcnow()
    )
    run.progress.save()
    if refused is None:
        what = (
            f"ticked {ref.ac_id} in {ref.path} on {branch} as {commit[:12]}"
            if commit
            else (f"{ref.ac_id} in {ref.path} was ticked already")
        )
        _say(run, listener, what)
        return ""
    _say(run, listener, f"warning: {ref.ac_id} in {ref.path} not ticked: {refused}")
    return f"; {ref.ac_id} not ticked in {ref.path} ({refused}): run `capataz prd tick {ref.path}`"


def _say(run: RunState, listener: Listener, text: str) -> None:
    """A line of capataz's in the run's log, and to the listener (a runner stores it
    with the run)."""
    line = OutputLine(utcnow(), "capataz", text)
    run.log.write("capataz", line)
    listener(Event("output", "capataz", line=line))
