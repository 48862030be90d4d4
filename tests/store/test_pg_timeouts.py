"""PostgreSQL session timeouts: a process frozen inside a write transaction stalls the
others for seconds, not for as long as it stays frozen (engine.py, _outage.py)."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tests.helpers import wait_for

from capataz.store import Store, StoreUnavailable, create_engine_for
from capataz.store._outage import is_unavailable
from capataz.store._wakeup import ReadyListener
from capataz.store.engine import PG_SESSION_TIMEOUTS, normalise_url

# Opens a write transaction through capataz's own engine (so with its timeouts), locks
# the task's row, says so, and freezes itself, as a runner stopped by SIGSTOP would.
FROZEN_WRITER = """
import os, signal, sys
import sqlalchemy as sa
from capataz.store import create_engine_for
engine = create_engine_for(sys.argv[1])
conn = engine.connect()
conn.begin()
conn.execute(sa.text("UPDATE tasks SET priority = priority WHERE id = :id"), {"id": sys.argv[2]})
print("holding", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def _settings(url: str) -> dict[str, str]:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            return {
                name: str(conn.exec_driver_sql(f"SHOW {name}").scalar())
                for name in PG_SESSION_TIMEOUTS
            }
    finally:
        engine.dispose()


def test_every_connection_has_the_session_timeouts(migrated_pg_url: str) -> None:
    assert _settings(migrated_pg_url) == PG_SESSION_TIMEOUTS


def test_options_in_the_url_override_them(migrated_pg_url: str) -> None:
    url = f"{migrated_pg_url}?options={quote('-c lock_timeout=20s')}"
    assert _settings(url) == {**PG_SESSION_TIMEOUTS, "lock_timeout": "20s"}
    Store.open(url).close()  # and the store opens with them


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [("55P03", True), ("57014", True), ("25P03", True), ("57P05", True), ("23505", False)],
)
def test_the_timeouts_errors_are_outages_a_runner_retries(sqlstate: str, transient: bool) -> None:
    """Lock, statement, idle-in-transaction and idle-session timeouts pass by themselves;
    a unique violation (the control) is a bug and is never retried."""
    error = psycopg.errors.lookup(sqlstate)("from the server")
    assert is_unavailable(sa.exc.DBAPIError("SELECT 1", None, error)) is transient


def test_a_writer_waiting_for_a_held_row_gives_up_as_an_outage(migrated_pg_url: str) -> None:
    """lock_timeout: the wait ends in StoreUnavailable (retried) instead of lasting as
    long as the holder's transaction. The holder here lifts its own idle timeout, so
    only the waiter's lock timeout can end the wait."""
    store = Store.open(migrated_pg_url)
    holder = create_engine_for(migrated_pg_url)
    try:
        task = store.tasks.add("t", "echo hi")
        with holder.begin() as conn:
            conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
            conn.execute(
                sa.text("UPDATE tasks SET priority = priority WHERE id = :id"), {"id": task.id}
            )
            with pytest.raises(StoreUnavailable) as caught:
                store.tasks.cancel(task.id)
        assert "lock timeout" in caught.value.message
        store.tasks.cancel(task.id)  # the row is free again: the retry passes
        assert store.tasks.get(task.id).status == "cancelled"
    finally:
        holder.dispose()
        store.close()


def _state(pid: int) -> str:
    """The process state letter of /proc/PID/stat (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.fixture
def frozen() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # a stopped process ignores SIGTERM until continued
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_frozen_writer_does_not_stall_the_others(
    migrated_pg_url: str, frozen: list[subprocess.Popen[str]]
) -> None:
    store = Store.open(migrated_pg_url)
    try:
        task = store.tasks.add("t", "echo hi")
        claimed = store.leases.claim("runner-1")
        assert claimed is not None and claimed.id == task.id
        writer = subprocess.Popen(
            [sys.executable, "-c", FROZEN_WRITER, migrated_pg_url, task.id],
            stdout=subprocess.PIPE,
            text=True,
        )
        frozen.append(writer)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "holding"
        wait_for(lambda: _state(writer.pid) == "T", "the writer freezes itself")

        def complete() -> bool:
            try:
                return store.leases.complete(task.id, claimed.fencing_token, "done")
            except StoreUnavailable:  # the lock timeout: what a runner retries
                return False

        assert wait_for(complete, "the report gets past the frozen writer's row lock")
        assert store.tasks.get(task.id).status == "done"
    finally:
        store.close()
    engine = create_engine_for(migrated_pg_url)
    try:
        with engine.connect() as conn:
            # The server ended the frozen session (idle in transaction), freeing its locks.
            left = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state = 'idle in transaction'"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert left == 0


class _SlowReader(io.StringIO):
    """A file whose first write waits until the exporting session has sat idle in its
    transaction well past the (tiny) idle timeout of the URL, or was ended for it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.seen: str | None = None

    def write(self, s: str) -> int:
        if self.seen is None:
            engine = create_engine_for(self.url)
            try:
                self.seen = wait_for(lambda: self._exporter(engine), "the export idles")
            finally:
                engine.dispose()
        return super().write(s)

    @staticmethod
    def _exporter(engine: sa.Engine) -> str | None:
        with engine.connect() as conn:
            states = conn.execute(
                sa.text(
                    "SELECT now() - state_change > interval '1 second' FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'idle in transaction'"
                )
            ).scalars()
            found = list(states)
        if not found:
            return "ended"  # the server ended the export's session
        return "idled past the timeout" if found[0] else None


def test_a_streamed_export_is_not_ended_by_the_idle_timeout(migrated_pg_url: str) -> None:
    """A read holds no lock a writer waits for, so a slow consumer (a pager) may keep
    its transaction open: the audit export lifts the idle timeout for itself."""
    with contextlib.closing(Store.open(migrated_pg_url)) as writer:
        writer.tasks.add("t", "echo hi")  # one audit entry at least
    url = f"{migrated_pg_url}?options={quote('-c idle_in_transaction_session_timeout=100ms')}"
    store = Store.open(url)
    try:
        reader = _SlowReader(url)
        count = store.audit.export(reader)
    finally:
        store.close()
    assert reader.seen == "idled past the timeout"
    assert count >= 1 and reader.getvalue().count("\n") == count


def test_the_listen_connection_is_idle_not_idle_in_a_transaction(migrated_pg_url: str) -> None:
    """The wake-up connection sits idle for as long as nothing becomes ready; in
    autocommit it is never *in a transaction*, so even a 100 ms idle timeout spares it."""
    url = f"{migrated_pg_url}?options={quote('-c idle_in_transaction_session_timeout=100ms')}"
    listener = ReadyListener(make_url(normalise_url(url)))
    probe = create_engine_for(migrated_pg_url)
    try:
        assert listener.wait(0) is False  # connects and listens

        def listening_long() -> bool:
            with probe.connect() as conn:
                return bool(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                            " AND state = 'idle' AND now() - state_change > interval '1 second'"
                        )
                    ).scalar()
                )

        wait_for(listening_long, "the LISTEN connection idles past the idle timeout")
        with contextlib.closing(Store.open(migrated_pg_url)) as store:
            store.tasks.add("t", "echo hi")  # notifies capataz_ready
        assert listener.wait(60) is True
    finally:
        listener.close()
        probe.dispose()
