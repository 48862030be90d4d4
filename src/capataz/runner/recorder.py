"""What a run records as it goes (its steps and its log), written in batches.

A trivial task goes through six steps in a tenth of a second; recorded one by one,
that was twelve write transactions (each with its event) per task, the largest share
of a runner's store traffic after the claim itself. :class:`RunRecorder` gathers a
run's step records and log lines and writes them together with
``store.runs.record_batch``: one transaction for everything pending, at the latest
:data:`STEP_DELAY` after a step started or finished (so a long step is seen running
almost at once) or :data:`LOG_DELAY` after a log line, and always before the run
reports its end. Each record keeps the time it happened (its ``age`` in the batch), so
the steps' times in the store are what they were, not the batch's.

Records are numbered per run, and ``record_batch`` stores a number once: a batch that
met an outage is kept and sent again with the next one, and a batch that was stored
although its answer was lost is not stored twice. A queue without ``record_batch`` (the
remote queue, whose own outbox already batches) is called once per record, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from capataz.runner.queue import QueueRuns
from capataz.store.records import RunRecord

__all__ = ["LOG_DELAY", "STEP_DELAY", "RunRecorder"]

log = logging.getLogger("capataz.runner")

STEP_DELAY = 0.25  # seconds a step record may wait for others before it is written
LOG_DELAY = 0.5  # the same for log lines (the log went up twice a second before, too)
_MAX_LINES = 200  # this many log lines waiting: written at once
_MAX_KEPT = 2000  # records kept through an outage; older ones are dropped (run.log has all)

Batch = Callable[[str, Sequence[RunRecord]], object]


class RunRecorder:
    """One run's step records and log lines on their way to the queue. Thread-safe:
    the task's thread records, the heartbeat and a timer flush."""

    def __init__(self, runs: QueueRuns, run_id: str, task_id: str) -> None:
        self._runs = runs
        self._batch: Batch | None = getattr(runs, "record_batch", None)
        self._run_id = run_id
        self._task_id = task_id
        self._lock = threading.Lock()  # the pending records and lines
        self._uploading = threading.Lock()  # one write at a time, so records stay in order
        self._pending: list[tuple[float, RunRecord]] = []  # (monotonic time, record)
        self._lines: list[str] = []
        self._lines_since = 0.0  # when the oldest waiting line was printed
        self._seq = 0
        self._timer: threading.Timer | None = None
        self._timer_due = 0.0
        self._log_flushed = time.monotonic()

    def step(self, phase: str, status: str, outcome: str = "") -> None:
        """A step started (``status`` "started") or finished with ``outcome``."""
        if self._batch is None:
            if status == "started":
                self._runs.step_started(self._run_id, phase)
            else:
                self._runs.step_finished(self._run_id, phase, outcome)
            return
        with self._lock:
            self._take_lines()  # lines printed before this step's record come first
            self._add(RunRecord(0, "step", phase=phase, status=status, outcome=outcome))
            self._arm(STEP_DELAY)

    def line(self, text: str) -> None:
        """One line of the run's log (its source already in it)."""
        with self._lock:
            if not self._lines:
                self._lines_since = time.monotonic()
            self._lines.append(text)
            full = len(self._lines) >= _MAX_LINES
            if self._batch is not None and not full:
                self._arm(LOG_DELAY)
                return
            due = full or time.monotonic() - self._log_flushed > LOG_DELAY
        if due:
            self.flush()

    def flush(self) -> None:
        """Write everything waiting now (the heartbeat's call, and the run's last)."""
        with self._uploading:
            if self._batch is None:
                self._flush_log()
                return
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._take_lines()
                if not self._pending:
                    return
                now = time.monotonic()
                batch = [_aged(record, now - at) for at, record in self._pending]
            try:
                self._batch(self._run_id, batch)
            except Exception as exc:  # noqa: BLE001 - recording is best effort; the run goes on
                log.warning("task %s: could not record steps or log: %s", self._task_id, exc)
                return  # kept: sent again with the next batch (a stored number is skipped)
            sent = {record.seq for record in batch}
            with self._lock:
                self._pending = [(at, r) for at, r in self._pending if r.seq not in sent]

    def close(self) -> None:
        """The run is over: write what is left and stop the timer."""
        self.flush()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # -- under self._lock -----------------------------------------------------------

    def _add(self, record: RunRecord, at: float | None = None) -> None:
        self._seq += 1
        numbered = replace(record, seq=self._seq, age=0.0)
        self._pending.append((time.monotonic() if at is None else at, numbered))
        del self._pending[:-_MAX_KEPT]

    def _take_lines(self) -> None:
        """The waiting log lines become one log record, in their place among the steps."""
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._add(RunRecord(0, "log", text=text), self._lines_since)
            self._lines = []

    def _arm(self, delay: float) -> None:
        """Make sure a flush comes within ``delay``: a timer already due sooner stays."""
        due = time.monotonic() + delay
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        timer = threading.Timer(delay, self.flush)
        timer.daemon = True
        timer.name = f"record-{self._task_id}"
        self._timer, self._timer_due = timer, due
        timer.start()

    # -- a queue without batches (the remote one: its outbox batches) ----------------

    def _flush_log(self) -> None:
        with self._lock:
            if not self._lines:
                return
            text, self._lines = "\n".join(self._lines) + "\n", []
            self._log_flushed = time.monotonic()
        try:
            self._runs.append_log(self._run_id, text)
        except Exception as exc:  # noqa: BLE001 - the full log is in the progress files
            log.warning("task %s: log upload failed: %s", self._task_id, exc)


def _aged(record: RunRecord, age: float) -> RunRecord:
    return replace(record, age=max(0.0, age))
