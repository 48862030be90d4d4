"""capataz's state is private to whoever runs it, and ids cannot smuggle characters."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.redteam.conftest import Attacker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_private_to_its_owner(attacker: Attacker) -> None:
    state = attacker.repo / ".capataz"
    state.mkdir(mode=0o755)  # as an older capataz made it
    state.chmod(0o755)
    os.chown(state, attacker.uid, attacker.uid)
    report = attacker.exec("echo hi > hi.txt", "private")
    assert report["outcome"] == "landed", report
    added = attacker.capataz("task", "add", "echo queued", "--id", "queued")
    assert added.returncode == 0, added.stderr
    stored = attacker.capataz("secret", "set", "API_TOKEN", stdin="s3cr3t-value-123\n")
    assert stored.returncode == 0, stored.stderr
    started = attacker.capataz("runner", "start")
    assert started.returncode == 0, started.stderr
    assert attacker.capataz("runner", "stop").returncode == 0
    assert mode(state) == 0o700
    for name in ("capataz.db", "capataz.db-wal", "capataz.db-shm"):
        if (state / name).exists():
            assert mode(state / name) == 0o600, name
    assert (state / "capataz.db").exists()
    assert mode(state / "progress" / "private" / "artifacts" / "run.log") == 0o600
    assert mode(state / "master.key") == 0o600
    assert mode(state / "runner.log") == 0o600


def test_a_task_id_with_a_trailing_newline_is_refused(attacker: Attacker) -> None:
    done = attacker.capataz("exec", "echo x > x.txt", "--id", "t1\n")
    assert done.returncode == 2
    assert "invalid task id" in done.stderr and "Traceback" not in done.stderr
    assert "x.txt" not in attacker.git("ls-tree", "--name-only", "main")
