"""A local run's steps and log go to the store in batches (``RunRecorder``): one
transaction for what is pending, in the order it happened, with each step's own time;
a batch that met an outage is sent again; a queue without batches is called per record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from tests.helpers import wait_for

from capataz.errors import Unavailable
from capataz.runner.recorder import RunRecorder
from capataz.store import RunRecord, Store


class FakeRuns:
    """``store.runs`` with ``record_batch``: keeps each batch; fails while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[RunRecord]] = []
        self.down = False

    def record_batch(self, run_id: str, records: Sequence[RunRecord]) -> tuple[int, bool]:
        if self.down:
            raise Unavailable("database away", fix="wait")
        self.batches.append(list(records))
        return len(records), True

    def step_started(self, run_id: str, phase: str) -> object:
        raise AssertionError("one record at a time while batches are possible")

    def step_finished(self, run_id: str, phase: str, outcome: str) -> object:
        raise AssertionError("one record at a time while batches are possible")

    def append_log(self, run_id: str, text: str) -> object:
        raise AssertionError("one record at a time while batches are possible")


class OneByOne:
    """A queue without batches (the remote one): each call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def step_started(self, run_id: str, phase: str) -> object:
        self.calls.append(("started", phase))
        return None

    def step_finished(self, run_id: str, phase: str, outcome: str) -> object:
        self.calls.append(("finished", phase, outcome))
        return None

    def append_log(self, run_id: str, text: str) -> object:
        self.calls.append(("log", text))
        return None


def _shape(records: list[RunRecord]) -> list[tuple[int, str, str]]:
    return [(r.seq, r.kind, r.text or f"{r.phase}:{r.status}") for r in records]


def test_a_short_run_is_one_batch_in_order() -> None:
    runs = FakeRuns()
    recorder = RunRecorder(runs, "run-1", "t")
    recorder.step("prepare", "started")
    recorder.step("prepare", "finished", "ok")
    recorder.line("[agent] hello")
    recorder.line("[agent] world")
    recorder.step("execute", "finished", "ok")
    recorder.close()
    assert len(runs.batches) == 1
    assert _shape(runs.batches[0]) == [
        (1, "step", "prepare:started"),
        (2, "step", "prepare:finished"),
        (3, "log", "[agent] hello\n[agent] world\n"),
        (4, "step", "execute:finished"),
    ]
    assert all(r.age >= 0 for r in runs.batches[0])
    assert runs.batches[0][0].age >= runs.batches[0][-1].age  # older records are older
    recorder.close()
    assert len(runs.batches) == 1  # nothing left: no empty batch


def test_a_step_is_written_soon_without_waiting_for_the_run_to_end() -> None:
    runs = FakeRuns()
    recorder = RunRecorder(runs, "run-1", "t")
    recorder.step("execute", "started")
    wait_for(lambda: runs.batches, "the timer wrote the step")
    assert _shape(runs.batches[0]) == [(1, "step", "execute:started")]
    recorder.close()


def test_a_batch_that_met_an_outage_is_sent_again_with_the_next() -> None:
    runs = FakeRuns()
    recorder = RunRecorder(runs, "run-1", "t")
    recorder.step("prepare", "started")
    runs.down = True
    recorder.flush()  # lost for now, kept
    runs.down = False
    recorder.step("prepare", "finished", "ok")
    recorder.close()
    assert [_shape(b) for b in runs.batches] == [
        [(1, "step", "prepare:started"), (2, "step", "prepare:finished")]
    ]


def test_a_queue_without_batches_is_called_per_record() -> None:
    runs = OneByOne()
    recorder = RunRecorder(runs, "run-1", "t")
    recorder.step("prepare", "started")
    recorder.line("[agent] hi")
    recorder.step("prepare", "finished", "ok")
    recorder.close()
    assert runs.calls == [
        ("started", "prepare"),
        ("finished", "prepare", "ok"),
        ("log", "[agent] hi\n"),
    ]


def test_steps_keep_their_own_times_in_the_store(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        store.tasks.add("a", "x", id="a")
        claimed = store.leases.claim("runner-1")
        assert claimed is not None
        run = claimed.run_id
        batch = [
            RunRecord(1, "step", phase="prepare", status="started", age=2.0),
            RunRecord(2, "step", phase="prepare", status="finished", outcome="ok", age=1.0),
            RunRecord(3, "log", text="hi\n", age=0.5),
        ]
        assert store.runs.record_batch(run, batch) == (3, True)
        detail = store.runs.get(run)
        (step,) = detail.steps
        assert step.ended_at is not None
        assert step.ended_at - step.started_at == pytest.approx(
            timedelta(seconds=1), abs=timedelta(milliseconds=10)
        )
        assert detail.log_tail == "hi\n"
    finally:
        store.close()
