"""The supervised pipeline: one task, end to end.

prepare → pre-gates → execute → collect → post-gates → decide → (escalate) → finalize.
Each step is one method below, in that order; :class:`Supervisor.execute` reads like the
list above. Everything a step learns goes to the progress files as it happens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from capataz.agents.commands import agent_env, render_command, resolve_agent
from capataz.agents.presets import with_presets
from capataz.config import Config
from capataz.context.flow import ContextLink
from capataz.errors import CapatazError, Interrupted, TaskError
from capataz.gates import GateReport, run_gates
from capataz.gates.network import agent_network_key
from capataz.gates.secrets import secret_leak_violations
from capataz.models import (
    Decision,
    EscalationChoice,
    GatePhase,
    Outcome,
    ProgressStatus,
    Severity,
    ViolationType,
    utcnow,
)
from capataz.names import validate_task_id
from capataz.pipeline.agent_watch import AgentWatch, leave_out_state_files
from capataz.pipeline.decision import Verdict, decide
from capataz.pipeline.escalation import Answer, close_escalation, open_escalation, wait_for_answer
from capataz.pipeline.findings import RunState, collected_violations
from capataz.pipeline.interface import Event, Listener, RunHooks, RunReport, RunSpec
from capataz.pipeline.prd_progress import tick_landed
from capataz.pipeline.progress import ProgressDir
from capataz.pipeline.progress_state import (
    GateSummary,
    ProgressMetrics,
    ProgressState,
    StepRecord,
    Validation,
)
from capataz.pipeline.runlog import RunLog
from capataz.prd.branch import criterion_of
from capataz.sandbox import get_sandbox
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, Sandbox, SandboxSpec
from capataz.sandbox.cache import agent_cache_dir
from capataz.sandbox.network import network_setting
from capataz.secrets.delivery import SecretDelivery
from capataz.statedir import state_dir
from capataz.workspace.changes import ChangeSet
from capataz.workspace.isolated import Workspace
from capataz.workspace.landing import land, rollback
from capataz.workspace.repo import Repository

__all__ = ["Event", "Listener", "RunHooks", "RunReport", "RunSpec", "Supervisor"]

T = TypeVar("T")


class Supervisor:
    def __init__(
        self,
        repo: Repository,
        config: Config,
        *,
        sandbox: Sandbox | None = None,
        listener: Listener | None = None,
        terminal: TextIO | None = None,
        hooks: RunHooks | None = None,
        context: ContextLink | None = None,
    ) -> None:
        self.hooks = hooks or RunHooks()
        self.context = context or ContextLink()  # context between tasks (context_flow)
        self.repo = repo
        self.config = config
        self.sandbox = sandbox or get_sandbox(config.project.sandbox, config.sandbox)
        self.listener = listener or (lambda event: None)
        self.terminal = terminal
        self.progress_root = repo.root / config.project.progress_dir
        self.workspaces = repo.root / ".capataz" / "workspaces"
        self.secrets = SecretDelivery(with_presets(config), repo.root, self.hooks.secrets)

    # -- the pipeline -------------------------------------------------------------

    def execute(self, spec: RunSpec) -> RunReport:
        self.secrets.prepare(spec.agent)  # a missing credential: refused before anything
        run = self._prepare(spec)
        try:
            pre, verdict = self._step(run, "pre-gates", lambda: self._gates(run, GatePhase.PRE))
            run.progress.record_decision("pre-task", verdict.decision, verdict.reason)
            if verdict.decision is Decision.BLOCK:
                run.violations = pre.violations
                return self._roll_back(run, verdict, Outcome.BLOCKED, ProgressStatus.BLOCKED)
            self._step(run, "execute", lambda: self._execute(run))
            self._step(run, "collect", lambda: self._collect(run))
            if run.agent is not None and run.agent.outcome is ExecOutcome.CANCELLED:
                return self._cancelled(run, "stopped from outside while the agent ran")
            return self._judge(run)
        except CapatazError as exc:
            self._abandon(run, str(exc))
            raise
        except KeyboardInterrupt as exc:
            why = f"{exc.signal_name} received" if isinstance(exc, Interrupted) else "interrupted"
            self._abandon(run, f"{why} (by the user or the system)")
            raise
        finally:
            run.log.close()

    def _abandon(self, run: RunState, why: str) -> None:
        """capataz could not go on (the sandbox would not start, git failed, Ctrl-C):
        roll back like a block, record why, and let the error reach the user."""
        reason = f"stopped: {why}"
        run.log.note("capataz", reason)
        rollback(
            self.repo,
            run.workspace,
            result=None,
            target=self.config.project.target_branch,
            reason=reason,
            artifacts=run.progress.artifacts if run.progress.owned else None,
        )
        run.progress.record_decision("error", Decision.ROLLED_BACK, reason)
        state = run.progress.state
        state.status = ProgressStatus.ROLLED_BACK.value
        state.outcome = "error"
        state.reason = reason
        state.completed_at = utcnow()
        state.steps = run.steps
        run.progress.save()

    def resume(self, task_id: str) -> RunReport:
        """Re-judge a task a human modified (escalation answered ``modify``)."""
        progress = ProgressDir(self.progress_root, validate_task_id(task_id))
        if not progress.exists():
            raise TaskError(
                f"no task {task_id!r} in {self.progress_root}",
                fix="check the id (see the progress directory)",
            )
        state = progress.load()
        if (
            state.status != ProgressStatus.ESCALATED.value
            or not state.awaiting_human
            or state.workspace is None
        ):
            raise TaskError(
                f"task {task_id!r} is {state.status}, not waiting for edits",
                fix="only a task answered with `modify` can be resumed",
            )
        spec = RunSpec(
            task_id=task_id,
            instruction=state.instruction,
            agent=state.agent,
            title=state.title,
            allow_high=state.allow_high,
            prd=criterion_of(state.prd),
        )
        self.secrets.prepare(spec.agent)  # the post-gates may need theirs
        ws = Workspace.existing(
            self.repo, task_id, self.workspaces, state.base_commit, Path(state.workspace).name
        )
        run = RunState(
            spec=spec,
            progress=progress,
            workspace=ws,
            log=RunLog(progress.run_log),
            steps=list(state.steps),
        )
        state.awaiting_human = False
        state.status = ProgressStatus.VALIDATING_POST.value
        progress.save()
        try:
            self._step(run, "collect", lambda: self._collect(run, message="human edits"))
            return self._judge(run)
        finally:
            run.log.close()

    def _cancelled(self, run: RunState, why: str) -> RunReport:
        verdict = Verdict(Decision.BLOCK, why)
        return self._roll_back(run, verdict, Outcome.CANCELLED, ProgressStatus.ROLLED_BACK)

    def _judge(self, run: RunState) -> RunReport:
        post, verdict = self._step(run, "post-gates", lambda: self._gates(run, GatePhase.POST))
        if self.hooks.should_stop is not None and self.hooks.should_stop():
            return self._cancelled(run, "stopped from outside during the post-gates")
        run.violations = post.violations
        run.progress.record_decision("post-task", verdict.decision, verdict.reason)
        if verdict.decision is Decision.ESCALATE:
            answer = self._step(run, "escalation", lambda: self._escalate(run, verdict))
            return self._apply_answer(run, verdict, answer)
        if verdict.decision is Decision.BLOCK:
            return self._roll_back(run, verdict, Outcome.BLOCKED, ProgressStatus.BLOCKED)
        return self._finalize(run, verdict)

    # -- steps --------------------------------------------------------------------

    def _prepare(self, spec: RunSpec) -> RunState:
        validate_task_id(spec.task_id)
        agent = resolve_agent(self.config, spec.agent)  # fail before touching anything
        progress = ProgressDir(self.progress_root, spec.task_id)
        state_dir(self.repo.root)
        base = self.repo.branch_tip(self.config.project.target_branch)
        now = utcnow()
        progress.reset(
            ProgressState(
                task_id=spec.task_id,
                title=spec.title,
                description=spec.title or spec.instruction,
                instruction=spec.instruction,
                agent=spec.agent,
                allow_high=spec.allow_high,
                status=ProgressStatus.PENDING.value,
                current_phase="prepare",
                created_at=now,
                started_at=now,
                completed_at=None,
                base_commit=base,
                target_branch=self.config.project.target_branch,
                sandbox=self.sandbox.name,
                validation=Validation(),
                metrics=ProgressMetrics(),
                steps=[],
            )
        )
        if spec.prd is not None:
            progress.state.prd = spec.prd.key
        log = RunLog(progress.run_log)
        run = RunState(spec=spec, progress=progress, workspace=None, log=log)  # type: ignore[arg-type]
        run.workspace = self._step(
            run,
            "prepare",
            lambda: Workspace.create(
                self.repo,
                spec.task_id,
                base,
                self.workspaces,
                f"{spec.task_id}.{spec.attempt}" if spec.attempt else None,
            ),
        )
        progress.state.workspace = str(run.workspace.path)
        log.note(
            "capataz",
            f"task {spec.task_id}: agent {spec.agent} ({(agent.command or ['?'])[0]}), "
            f"base {base[:12]}, sandbox {self.sandbox.name}",
        )
        return run

    def _gates(self, run: RunState, phase: GatePhase) -> tuple[GateReport, Verdict]:
        """Run one phase's gates and decide on them, once: the report file and the
        decision log are both written from this one verdict, so they never disagree."""
        status = (
            ProgressStatus.VALIDATING_PRE
            if phase is GatePhase.PRE
            else ProgressStatus.VALIDATING_POST
        )
        run.progress.state.status = status.value
        extra = collected_violations(run, self.config, self.repo) if phase is GatePhase.POST else []
        fatal = any(v.severity is Severity.CRITICAL for v in extra)
        report = run_gates(
            phase,
            self.config,
            self.sandbox,
            workspace=run.workspace.tree,
            git_dir=run.workspace.git_dir,
            hide=self._hidden(),
            read_only=self._read_only(),
            changes=run.changes,
            on_output=lambda source, line: self._output(run, source, line),
            extra=extra,
            skip_commands=fatal,
            should_stop=self.hooks.should_stop,
            prepare=self.secrets.for_gate,
        )
        if any(g.get("outcome") for g in report.gates):  # a command gate ran in the tree
            self._clean_tree(run)
        run.progress.record_violations(report.violations)
        summary = GateSummary(
            passed=report.passed, timestamp=utcnow(), violations=report.violations
        )
        if phase is GatePhase.PRE:
            run.progress.state.validation.pre_task = summary
        else:
            run.progress.state.validation.post_task = summary
        allow_high = run.spec.allow_high
        if allow_high is None:
            allow_high = self.config.project.allow_high
        verdict = decide(phase, report.violations, allow_high=allow_high)
        run.progress.write_report(
            phase,
            {
                "phase": f"{phase.value}-task",
                "timestamp": summary.timestamp.isoformat(),
                "status": verdict.decision.value,
                "gates": report.gates,
                "violations": [v.model_dump(mode="json") for v in report.violations],
                "message": verdict.reason,
            },
        )
        return report, verdict

    def _execute(self, run: RunState) -> ExecResult:
        run.progress.state.status = ProgressStatus.IN_PROGRESS.value
        agent = resolve_agent(self.config, run.spec.agent)
        argv = render_command(
            agent,
            instruction=run.spec.instruction,
            workspace=run.workspace.tree,
            task_id=run.spec.task_id,
            context=self.context.deliver(run.workspace.tree, run.spec.task_id, agent, run.log),
        )
        spec = SandboxSpec(
            argv=argv,
            workspace=run.workspace.tree,
            limits=agent,
            git_dir=run.workspace.git_dir,
            read_only=self._read_only(),
            hide=self._hidden(),
            env=agent_env(agent),
            network=network_setting(agent.network, agent_network_key(run.spec.agent)),
            cache=agent_cache_dir(self.repo.root, run.spec.agent) if agent.cache else None,
        )
        spec = self.secrets.for_agent(agent, spec)
        path = agent.env.get("PATH")
        watch = run.watch = AgentWatch(
            run.spec.agent, agent, argv, run.log, path, budget=run.spec.budget
        )
        sink = watch.sink(lambda line: self._output(run, "agent", line))
        ended = self.sandbox.run(spec, sink, watch.should_stop(self.hooks.should_stop))
        run.agent = watch.finish(ended, run.progress.state.metrics)
        for record in run.agent.connections:  # the network allowlist's proxy, if any
            run.log.write("network", OutputLine(record.at, "capataz", record.line()))
        return run.agent

    def _collect(self, run: RunState, message: str = "") -> ChangeSet | None:
        first_line = next(iter(run.spec.instruction.strip().splitlines()), "")[:72]
        title = run.spec.title or first_line or run.spec.task_id
        suffix = f" ({message})" if message else ""
        run.nested_git += run.workspace.remove_nested_git()
        run.published = self.context.take(run.workspace.tree, self.config, run.spec.agent)
        leave_out_state_files(run.workspace, resolve_agent(self.config, run.spec.agent), run.log)
        run.workspace.commit(
            f"{title}{suffix}\n\n"
            f"capataz-task: {run.spec.task_id}\ncapataz-agent: {run.spec.agent}\n"
        )
        head = run.workspace.head()
        run.result = head if head != run.workspace.base else None
        run.changes = (
            run.workspace.changes(head) if run.result else ChangeSet(root=run.workspace.tree)
        )
        state = run.progress.state
        state.metrics.count_changes(run.changes.changes)
        state.result_commit = run.result
        state.file_changes = list(run.changes.changes)
        return run.changes

    def _escalate(self, run: RunState, verdict: Verdict) -> Answer:
        timeout = self.config.project.escalation_timeout
        run.progress.state.status = ProgressStatus.ESCALATED.value
        run.progress.save()
        record = open_escalation(
            run.progress,
            reason=verdict.reason,
            violations=run.violations,
            changes=run.changes.changes if run.changes else [],
            timeout=timeout,
            workspace=run.workspace.tree,
        )
        details = {
            "violations": record["violations"],
            "file_changes": record["fileChanges"],
            "diff": run.changes.patch if run.changes else "",
        }
        self.listener(Event("escalation", "escalation", "opened", verdict.reason, data=details))
        answer = wait_for_answer(
            run.progress, timeout=timeout, terminal=self.terminal, other=self.hooks.answers
        )
        close_escalation(run.progress, answer)
        run.log.note("capataz", f"escalation answered {answer.choice.value} via {answer.source}")
        self.listener(
            Event(
                "escalation", "escalation", "answered", f"{answer.choice.value} via {answer.source}"
            )
        )
        del record
        return answer

    def _apply_answer(self, run: RunState, verdict: Verdict, answer: Answer) -> RunReport:
        reason = f"human answered {answer.choice.value} via {answer.source}" + (
            f": {answer.note}" if answer.note else ""
        )
        if answer.choice is EscalationChoice.APPROVE:
            run.progress.record_decision("escalation", Decision.CONTINUE, reason)
            return self._finalize(run, Verdict(Decision.CONTINUE, reason))
        if answer.choice is EscalationChoice.MODIFY:
            run.progress.record_decision("escalation", Decision.ESCALATE, reason)
            state = run.progress.state
            state.status = ProgressStatus.ESCALATED.value
            state.awaiting_human = True
            state.current_phase = "awaiting-human"
            state.steps = run.steps
            run.progress.save()
            message = (
                f"workspace kept for your edits: {run.workspace.tree}; "
                f"then run `capataz resume {run.spec.task_id}`"
            )
            return self._report(run, Outcome.AWAITING_HUMAN, Decision.ESCALATE, reason, message)
        outcome = Outcome.REJECTED if answer.choice is EscalationChoice.REJECT else Outcome.ABORTED
        return self._roll_back(
            run, Verdict(Decision.ROLLED_BACK, reason), outcome, ProgressStatus.ROLLED_BACK
        )

    def _finalize(self, run: RunState, verdict: Verdict) -> RunReport:
        if run.result is None:
            self.context.publish(run.spec.task_id, run.published, run.log)
            run.workspace.discard()
            run.progress.record_decision(
                "completion", Decision.COMPLETED, "the agent changed nothing"
            )
            run.progress.state.status = ProgressStatus.COMPLETED.value
            run.progress.state.outcome = Outcome.NO_CHANGES.value
            return self._report(  # saves progress.json, outcome and all
                run,
                Outcome.NO_CHANGES,
                Decision.COMPLETED,
                verdict.reason,
                "the agent changed nothing; nothing to land",
            )
        if self.hooks.may_land is not None and not self.hooks.may_land():
            return self._cancelled(run, "this run no longer owns the task; not landing")
        landed = self._step(
            run,
            "finalize",
            lambda: land(
                self.repo,
                run.workspace,
                self.config.project.target_branch,
                self.config.project.land,
                run.changes,
            ),
            save=False,  # saved below, with the outcome
        )
        self.context.publish(run.spec.task_id, run.published, run.log)
        run.workspace.discard()
        run.progress.record_decision("completion", Decision.COMPLETED, landed.message)
        state = run.progress.state
        state.status = ProgressStatus.COMPLETED.value
        state.outcome = landed.outcome.value
        state.landed_commit = landed.commit if landed.outcome is Outcome.LANDED else None
        state.branch = landed.branch
        if run.spec.prd is not None:  # readers see the landing before the tick's commit
            run.progress.save()
        message = landed.message + tick_landed(
            self.repo, self.config, run, landed.outcome, self.listener
        )
        report = self._report(run, landed.outcome, Decision.COMPLETED, verdict.reason, message)
        report.landed_commit = landed.commit if landed.outcome is Outcome.LANDED else None
        report.branch = landed.branch
        return report

    def _roll_back(
        self, run: RunState, verdict: Verdict, outcome: Outcome, status: ProgressStatus
    ) -> RunReport:
        done = self._step(
            run,
            "rollback",
            lambda: rollback(
                self.repo,
                run.workspace,
                result=run.result,
                target=self.config.project.target_branch,
                reason=verdict.reason,
                artifacts=run.progress.artifacts if run.progress.owned else None,
                keep=not self._leaks_secret(run),
            ),
            save=False,  # saved by _report below, with the outcome
        )
        run.progress.record_decision("rollback", Decision.ROLLED_BACK, verdict.reason)
        state = run.progress.state
        state.metrics.rollbacks_applied = (state.metrics.rollbacks_applied or 0) + 1
        state.status = status.value
        state.outcome = outcome.value
        state.rejected_ref = done.rejected_ref
        state.rejected_inspect = done.inspect
        message = (
            f"rolled back; {run.spec.task_id} left no trace on {self.config.project.target_branch}"
        )
        if done.rejected_ref:
            message += f" (rejected commit kept as {done.rejected_ref}; see it: {done.inspect})"
        return self._report(
            run,
            outcome,
            verdict.decision if verdict.decision is not Decision.CONTINUE else Decision.BLOCK,
            verdict.reason,
            message,
        )

    # -- helpers ------------------------------------------------------------------

    def _leaks_secret(self, run: RunState) -> bool:
        """A result that carries a secret is kept nowhere. Judged on the result itself,
        not only on the verdict's violations: a run cancelled before its gates ran has
        none."""
        if any(v.type is ViolationType.SECRET_LEAK for v in run.violations):
            return True
        return bool(secret_leak_violations(run.workspace.git, run.workspace.base, run.result))

    def _report(
        self, run: RunState, outcome: Outcome, decision: Decision, reason: str, message: str
    ) -> RunReport:
        state = run.progress.state
        state.completed_at = utcnow()
        state.current_phase = outcome.value
        state.steps = run.steps
        state.reason = reason
        state.message = message
        run.progress.save()
        return RunReport(
            task_id=run.spec.task_id,
            outcome=outcome,
            decision=decision,
            reason=reason,
            message=message,
            base=run.workspace.base,
            result_commit=run.result,
            file_changes=run.changes.changes if run.changes else [],
            violations=run.violations,
            agent=run.agent,
            steps=run.steps,
            progress_dir=run.progress.path,
            diff=run.changes.patch if run.changes and run.result else None,
            usage=run.watch.usage if run.watch else None,
        )

    def _step(self, run: RunState, name: str, action: Callable[[], T], *, save: bool = True) -> T:
        """Run one step, recording it (start, end, outcome) in progress.json, which is
        written once at the step's end with whatever the step changed. ``save=False``
        when the caller saves the file itself moments later, with nothing a reader
        could wait on in between (finalize: the landing's outcome goes into that same
        write); a step that fails is saved at once either way."""
        started = utcnow()
        self.listener(Event("step", name, "started"))
        run.progress.state.current_phase = name
        outcome = "error"
        try:
            value = action()
            outcome = "ok"
            return value
        finally:
            ended = utcnow()
            run.steps.append(
                StepRecord(
                    phase=name,
                    started_at=started,
                    ended_at=ended,
                    outcome=outcome,
                    seconds=round((ended - started).total_seconds(), 4),
                )
            )
            run.progress.state.steps = run.steps
            if save or outcome != "ok":
                run.progress.save()
            self.listener(Event("step", name, "finished", outcome))

    def _output(self, run: RunState, source: str, line: OutputLine) -> None:
        run.log.write(source, line)
        self.listener(Event("output", source, line=line))

    def _clean_tree(self, run: RunState) -> None:
        """Throw away what gate commands wrote (caches, reports) so it never lands."""
        git = run.workspace.git
        git.run("read-tree", "--reset", "-u", "HEAD", check=False)
        git.run("clean", "-fdq", "-e", ".git", check=False)

    def _hidden(self) -> list[Path]:
        return [self.repo.root, self.repo.common_dir]

    def _read_only(self) -> list[Path]:
        return [self.repo.common_dir / "objects"]
