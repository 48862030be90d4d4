"""What both backends promise: output, exit status, limits, timeouts, cancellation."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from capataz.sandbox.base import ExecOutcome, Sandbox

Run = Callable[..., Any]


def test_output_arrives_as_timestamped_lines_in_order(run: Run, sandbox: Sandbox) -> None:
    before = datetime.now(UTC)
    ran = run(
        sandbox,
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'bad \\377 end\\nno newline'",
    )
    after = datetime.now(UTC)
    assert ran.result.outcome is ExecOutcome.OK
    assert ran.out == ["out1", "out2", "out3", "bad \ufffd end", "no newline"]
    assert ran.err == ["err1", "err2", "err3"]
    for stream in ("out", "err"):
        stamps = [line.at for line in ran.lines if line.stream == stream]
        assert stamps == sorted(stamps)
        assert all(before <= at <= after for at in stamps)
    assert ran.result.output_bytes == 3 * 5 + 3 * 5 + len(b"bad \xff end\nno newline")


def test_exit_codes_and_signals(run: Run, sandbox: Sandbox) -> None:
    ok = run(sandbox, "exit 0").result
    assert (ok.outcome, ok.exit_code, ok.signal, ok.ok) == (ExecOutcome.OK, 0, None, True)

    failed = run(sandbox, "exit 7").result
    assert (failed.outcome, failed.exit_code, failed.signal) == (ExecOutcome.FAILED, 7, None)
    assert failed.detail == "exit code 7"

    killed = run(sandbox, ["sh", "-c", "kill -TERM $$"]).result
    assert killed.outcome is ExecOutcome.FAILED
    assert (killed.exit_code, killed.signal) == (None, signal.SIGTERM)
    assert "SIGTERM" in killed.detail


def test_missing_command_is_a_failed_run(run: Run, sandbox: Sandbox) -> None:
    result = run(sandbox, ["capataz-no-such-command"]).result
    assert result.outcome is ExecOutcome.FAILED
    assert result.exit_code == 127


def test_stdin_is_empty_so_nothing_waits_for_a_human(run: Run, sandbox: Sandbox) -> None:
    ran = run(sandbox, "cat; read answer || echo no-input", idle_timeout=5)
    assert ran.result.outcome is ExecOutcome.OK
    assert ran.out == ["no-input"]


def test_environment_is_clean(run: Run, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPATAZ_TEST_SECRET", "hunter2")
    ran = run(
        sandbox,
        'env; echo home > "$HOME/probe" && cat "$HOME/probe"',
        env={"AGENT_VAR": "given"},
    )
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert "hunter2" not in ran.text
    assert not any(line.startswith("CAPATAZ_TEST_SECRET=") for line in ran.out)
    assert {"LC_ALL=C.UTF-8", "LANG=C.UTF-8", "TERM=dumb", "AGENT_VAR=given"} <= set(ran.out)
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in ran.out
    assert ran.out[-1] == "home"


def test_agents_have_a_git_identity(run: Run, sandbox: Sandbox) -> None:
    """HOME is empty but for a global git config: an agent that commits (or reads
    user.name from the config files, as GitPython does) has an identity."""
    ran = run(sandbox, 'git config --global user.name; cat "$HOME/.gitconfig"')
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert ran.out[0] == "capataz agent" and "\temail = agent@capataz.invalid" in ran.out


def test_wall_clock_timeout_kills_the_whole_tree(
    run: Run, sandbox: Sandbox, host_pids: Callable[[str], list[int]]
) -> None:
    marker = f"3004.{random.randrange(10**8)}"
    ran = run(sandbox, f"echo started; sleep {marker} & sleep 60", timeout=1)
    assert ran.result.outcome is ExecOutcome.TIMEOUT
    assert ran.out == ["started"]
    assert ran.result.wall_seconds >= 1  # not before its time; `sleep 60` never ended
    assert "after 1 s" in ran.result.detail
    assert host_pids(marker) == []


def test_silence_is_a_hang(
    run: Run, sandbox: Sandbox, host_pids: Callable[[str], list[int]]
) -> None:
    marker = f"3005.{random.randrange(10**8)}"
    ran = run(sandbox, f"echo started; sleep {marker}", idle_timeout=1)
    assert ran.result.outcome is ExecOutcome.HUNG
    assert ran.out == ["started"]
    assert ran.result.detail == "no output for 1 s; killed as a hang"
    assert host_pids(marker) == []


def test_output_keeps_a_command_alive(run: Run, sandbox: Sandbox) -> None:
    # Longer in all than the idle timeout; a tick never further apart than a third of it.
    ran = run(sandbox, "for i in 1 2 3 4 5; do echo tick; sleep 0.6; done", idle_timeout=2)
    assert ran.result.outcome is ExecOutcome.OK, ran.result.detail
    assert ran.result.wall_seconds > 2
    assert ran.out == ["tick"] * 5


def test_chatter_is_not_progress(run: Run, sandbox: Sandbox) -> None:
    """An agent retrying forever prints a line now and then; the sink calls those lines
    chatter (returns False), so they do not keep the idle watchdog quiet."""
    ran = run(
        sandbox,
        "echo started; while :; do echo 'retrying in 0.2 s'; sleep 0.2; done",
        idle_timeout=1,
        judge=lambda line: not line.text.startswith("retrying"),
    )
    assert ran.result.outcome is ExecOutcome.HUNG, ran.result.detail
    assert ran.out[0] == "started" and ran.out.count("retrying in 0.2 s") >= 2
    assert "only" in ran.result.detail and "retry chatter" in ran.result.detail


def test_should_stop_cancels(
    run: Run, sandbox: Sandbox, host_pids: Callable[[str], list[int]]
) -> None:
    marker = f"3006.{random.randrange(10**8)}"
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    ran = run(sandbox, f"sleep {marker}", should_stop=stop.is_set)  # would run an hour
    assert ran.result.outcome is ExecOutcome.CANCELLED
    assert host_pids(marker) == []


def test_output_flood_is_truncated_and_the_run_still_ends(
    run: Run, sandbox: Sandbox, python3: str
) -> None:
    flood = "import sys\nfor _ in range(500): sys.stdout.write(('x' * 99 + '\\n') * 1000)"
    ran = run(sandbox, [python3, "-c", flood], max_output=1024**2)
    result = ran.result
    assert result.outcome is ExecOutcome.OK
    assert result.output_truncated
    assert result.output_bytes == 50_000_000
    delivered = sum(len(line.text) + 1 for line in ran.lines[:-1])
    assert 1024**2 - 100 <= delivered <= 1024**2
    assert ran.lines[-1].text.startswith("[capataz] output truncated")
    assert "more bytes" in ran.lines[-1].text


def test_file_size_limit_stops_a_big_write(run: Run, sandbox: Sandbox, workspace: Path) -> None:
    ran = run(sandbox, "exec head -c 10000000 /dev/zero > big", file_size=1024**2)
    assert ran.result.outcome is ExecOutcome.FAILED
    assert ran.result.signal == signal.SIGXFSZ
    assert (workspace / "big").stat().st_size <= 1024**2


def test_cpu_time_and_peak_memory_are_measured(run: Run, sandbox: Sandbox, python3: str) -> None:
    busy = (
        "import time\nb = bytearray(64 * 1024 * 1024)\nend = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass"
    )
    result = run(sandbox, [python3, "-c", busy]).result
    assert result.outcome is ExecOutcome.OK
    assert result.cpu_seconds >= 0.25
    assert result.peak_memory_bytes >= 64 * 1024**2
    assert result.wall_seconds >= 0.25


def test_cpu_limit_kills(run: Run, sandbox: Sandbox) -> None:
    ran = run(sandbox, "while :; do :; done", cpu=1)
    assert ran.result.outcome is ExecOutcome.FAILED
    assert ran.result.signal == signal.SIGXCPU
    assert "CPU time limit" in ran.result.detail


def test_memory_limit_fails_the_command_not_the_host(
    run: Run, sandbox: Sandbox, python3: str
) -> None:
    ran = run(
        sandbox,
        [python3, "-c", "b = bytearray(4 * 1024**3); print('allocated')"],
        memory=256 * 1024**2,
    )
    assert ran.result.outcome is ExecOutcome.FAILED
    assert "MemoryError" in ran.text
    assert "allocated" not in ran.out
