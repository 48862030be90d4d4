"""One claimed task through the supervised pipeline, reported back to the store.

The runner hands each claimed task to a :class:`TaskExecution` on its own thread. The
pipeline knows nothing of queues: it is steered through :class:`RunHooks` (stop when
cancelled or the lease is lost, check the lease once more before landing, take
escalation answers from the queue) and observed through its listener (steps and log
lines are recorded as they happen). The queue is the database or the control plane
(:class:`RunnerQueue`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from capataz.config import Config
from capataz.context.store import context_link
from capataz.errors import CapatazError
from capataz.models import EscalationChoice, Outcome, ViolationType
from capataz.pipeline.escalation import Answer
from capataz.pipeline.supervisor import Event, RunHooks, RunReport, RunSpec, Supervisor
from capataz.prd.branch import criterion_of
from capataz.runner.queue import RunnerQueue
from capataz.runner.recorder import RunRecorder
from capataz.secrets.credentials import CredentialsWaitingError
from capataz.secrets.delivery import queue_source
from capataz.store import ClaimedTask, TaskState
from capataz.store.records import RunDetails
from capataz.workspace.repo import Repository

__all__ = ["TaskExecution", "state_for"]

log = logging.getLogger("capataz.runner")
T = TypeVar("T")


class Retry(Protocol):
    """Calls the queue, retrying through an outage (the runner's ``retry``)."""

    def __call__(self, call: Callable[[], T], what: str, *, give_up: float | None = ...) -> T: ...


# Violations that say the attempt itself went wrong (worth another try), as opposed to a
# gate judging a finished result (which another try would only repeat).
_ATTEMPT_FAILURES = {
    ViolationType.AGENT_FAILED,
    ViolationType.AGENT_TIMEOUT,
    ViolationType.AGENT_HUNG,
}


def state_for(report: RunReport) -> TaskState:
    """The queue state a finished run leaves its task in."""
    if report.outcome in (Outcome.LANDED, Outcome.BRANCH, Outcome.NO_CHANGES):
        return TaskState.DONE
    if report.outcome is Outcome.AWAITING_HUMAN:
        return TaskState.ESCALATED
    if report.outcome in (Outcome.ABORTED, Outcome.CANCELLED):
        return TaskState.CANCELLED
    if report.outcome is Outcome.REJECTED:
        return TaskState.FAILED  # reject = roll back and try again (docs/decisions.md)
    kinds = {v.type for v in report.violations}
    if kinds and kinds <= _ATTEMPT_FAILURES | {ViolationType.OUTPUT_LIMIT}:
        return TaskState.FAILED
    return TaskState.BLOCKED


class TaskExecution:
    """Runs one attempt; ``stop(why)`` may be called from any thread."""

    def __init__(
        self,
        claimed: ClaimedTask,
        *,
        store: RunnerQueue,
        repo: Repository,
        config: Config,
        runner_id: str,
        retry: Retry,
    ) -> None:
        self.claimed = claimed
        self.store = store
        self.repo = repo
        self.config = config
        self.runner_id = runner_id
        self.retry = retry  # store calls that must survive a database outage
        self.stopped = threading.Event()
        self.stop_reason = ""
        self.shutting_down = False
        self.recorder = RunRecorder(store.runs, claimed.run_id, claimed.id)

    @property
    def task_id(self) -> str:
        return self.claimed.id

    def stop(self, why: str, *, shutdown: bool = False) -> None:
        if not self.stopped.is_set():
            self.stop_reason = why
            self.shutting_down = shutdown
            self.stopped.set()

    def run(self) -> None:
        claimed = self.claimed
        hooks = RunHooks(
            should_stop=self.stopped.is_set,
            may_land=self._may_land,
            answers=self._answer,
            secrets=queue_source(self.store, self.repo.root, claimed.id, claimed.fencing_token),
        )
        # What dependents share; a remote runner's goes through the control plane.
        context = context_link(self.store, self.repo.root, claimed.fencing_token, self.retry)
        supervisor = Supervisor(
            self.repo, self.config, listener=self._observe, hooks=hooks, context=context
        )
        spec = RunSpec(
            task_id=claimed.id,
            instruction=claimed.instruction,
            agent=claimed.agent,
            title=claimed.title,
            allow_high=claimed.allow_high,
            attempt=claimed.attempt,
            budget=claimed.budget,
            prd=criterion_of(claimed.idempotency_key),
        )
        log.info("task %s: attempt %d of %d", claimed.id, claimed.attempt, claimed.max_attempts)
        try:
            report = supervisor.execute(spec)
        except CredentialsWaitingError as exc:  # not started: back to the queue, to wait
            self.recorder.close()
            self._wait_for_credentials(str(exc))
            return
        except CapatazError as exc:
            self.recorder.close()
            self._report(TaskState.FAILED, f"capataz could not run it: {exc}", None)
            return
        except BaseException:  # not capataz's: what was recorded still goes up first
            self.recorder.close()
            raise
        self.recorder.close()
        if report.outcome is Outcome.CANCELLED and self.shutting_down:
            self.retry(
                lambda: self.store.leases.release(
                    claimed.id, claimed.fencing_token, f"runner stopping: {self.stop_reason}"
                ),
                "release",
            )
            log.info("task %s: released (%s)", claimed.id, self.stop_reason)
            return
        state = state_for(report)
        self._report(state, report.reason, report)

    def _wait_for_credentials(self, why: str) -> None:
        """Give the task back without counting the attempt; it is tried again after
        ``[runner] credential_retry`` (the reason says which request blocks it)."""
        delay = self.config.runner.credential_retry
        self.retry(
            lambda: self.store.leases.release(
                self.claimed.id, self.claimed.fencing_token, why, delay_seconds=delay
            ),
            "release",
        )
        log.info("task %s: %s", self.claimed.id, why)

    # -- pipeline hooks ---------------------------------------------------------------

    def _may_land(self) -> bool:
        """Renew the lease right before landing: a runner that lost the task must not
        land it (another runner may be running it now)."""
        if self.stopped.is_set():
            return False
        return self.retry(
            lambda: self.store.leases.heartbeat(
                self.claimed.id, self.claimed.fencing_token, self.config.runner.lease
            ),
            "heartbeat before landing",
        )

    def _answer(self) -> Answer | None:
        if self.stopped.is_set():
            return Answer(
                EscalationChoice.ABORT, "runner", note=self.stop_reason, decided_by="runner"
            )
        try:
            answer = self.store.escalations.poll(self.claimed.id, self.claimed.fencing_token)
        except Exception as exc:  # noqa: BLE001 - a database blip must not end the wait
            log.warning("task %s: cannot read escalation answers yet: %s", self.claimed.id, exc)
            return None
        if answer is None:
            return None
        return Answer(
            EscalationChoice(answer.decision),
            "database",
            note=answer.note,
            decided_by=answer.decided_by,
        )

    def _observe(self, event: Event) -> None:
        try:
            if event.kind == "step" and event.status == "started":
                self.recorder.step(event.name, "started")
            elif event.kind == "step":
                self.recorder.step(event.name, "finished", event.detail)
            elif event.kind == "escalation" and event.status == "opened":
                # Retried: a question lost to an outage would leave the run waiting for
                # an answer nobody was asked for (asking twice changes nothing).
                self.retry(
                    lambda: self.store.escalations.open(
                        self.claimed.id, self.claimed.fencing_token, event.detail, event.data
                    ),
                    "escalation",
                )
            elif event.kind == "output" and event.line is not None:
                self.recorder.line(f"[{event.name}] {event.line.text}")
        except Exception as exc:  # noqa: BLE001 - recording is best effort; the run goes on
            log.warning("task %s: could not record %s: %s", self.claimed.id, event.kind, exc)

    def flush_log(self) -> None:
        """Upload what is waiting (the heartbeat's call): a run that printed a line and
        went quiet shows that line now, not when it next prints."""
        self.recorder.flush()

    # -- reporting --------------------------------------------------------------------

    def _report(self, state: TaskState, reason: str, report: RunReport | None) -> None:
        details = _details(report) if report is not None else None
        decision = report.decision.value if report is not None else None
        accepted = self.retry(
            lambda: self.store.leases.complete(
                self.claimed.id,
                self.claimed.fencing_token,
                state,
                reason,
                decision=decision,
                details=details,
                actor=self.runner_id,
            ),
            "report",
            # Until the queue is back, however long: the result may already have landed,
            # and giving up would leave the task to be run (and landed) again. Fencing
            # refuses it if the lease expired meanwhile.
            give_up=None,
        )
        if accepted:
            log.info("task %s: %s (%s)", self.claimed.id, state.value, reason)
        else:
            log.warning(
                "task %s: result refused: this runner no longer holds the task", self.claimed.id
            )


def _details(report: RunReport) -> RunDetails:
    agent, usage = report.agent, report.usage
    decisions = []
    if report.progress_dir is not None and (report.progress_dir / "decisions.jsonl").exists():
        import json

        lines = (report.progress_dir / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
        decisions = [json.loads(line) for line in lines if line]
    return RunDetails(
        outcome=report.outcome.value,
        exit_code=agent.exit_code if agent else None,
        wall_seconds=agent.wall_seconds if agent else None,
        cpu_seconds=agent.cpu_seconds if agent else None,
        peak_memory_bytes=agent.peak_memory_bytes if agent else None,
        result_commit=report.result_commit,
        landed_commit=report.landed_commit,
        file_changes=[c.model_dump(mode="json") for c in report.file_changes],
        violations=[v.model_dump(mode="json") for v in report.violations],
        decisions=decisions,
        diff=report.diff,
        tokens_in=usage.tokens_in if usage else None,
        tokens_out=usage.tokens_out if usage else None,
        cost_usd=usage.cost_usd if usage else None,
        model=usage.model if usage else None,
        turns=usage.turns if usage else None,
    )
