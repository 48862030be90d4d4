"""Red team: an agent trying to take more of the host than its limits grant.

Each attack runs through ``capataz exec --json`` as root and as an unprivileged user.
Measurements are written by the agent into a file of its workspace, which lands when
the run is allowed to: the test reads what the agent managed from the target branch.
The cgroup attack needs a cgroup per run, which this machine delegates to root only;
as the unprivileged user it is skipped, saying so (rlimits cannot bound a sum)."""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from capataz.sandbox.cgroups import detect

MiB = 1024**2


def configure(attacker: Any, **limits: str | int) -> None:
    """Give the shell agent these limits (committed: capataz reads the config from the
    repository, and a dirty tree would keep the result off the target branch)."""
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in limits.items())
    config = attacker.repo / "capataz.toml"
    config.write_text(config.read_text() + lines)  # appended to [agents.shell]
    attacker.git("commit", "--quiet", "-am", "limits")


def landed(attacker: Any, path: str) -> str:
    return str(attacker.git("show", f"main:{path}"))


def violations(report: dict[str, Any]) -> dict[str, str]:
    return {v["type"]: v["severity"] for v in report["violations"]}


def test_tmpfs_cannot_hold_more_than_the_memory_budget(attacker: Any) -> None:
    configure(attacker, memory="64MiB")
    fill = (
        'for place in /dev/shm /tmp "$HOME" /run /var/tmp /root /home /dev; do '
        'head -c 104857600 /dev/zero > "$place/fill" 2>/dev/null; '
        'echo "$place $(stat -c %s "$place/fill" 2>/dev/null || echo 0)"; '
        "done > held.txt"
    )
    report = attacker.exec(fill)
    assert report["outcome"] == "landed", report["reason"]
    held = {
        place: int(size)
        for place, size in (line.split() for line in landed(attacker, "held.txt").splitlines())
    }
    assert set(held) >= {"/dev/shm", "/tmp", "/run", "/var/tmp", "/dev"}
    assert sum(held.values()) <= 64 * MiB  # 800 MB attempted
    assert held["/dev/shm"] > 0  # writable, just small
    for read_only in ("/run", "/var/tmp", "/root", "/home", "/dev"):
        assert held.get(read_only, 0) == 0, read_only


def test_a_disk_bomb_is_killed_blocked_and_nothing_lands(attacker: Any) -> None:
    configure(attacker, disk="100MiB", file_size="100MiB")
    before = attacker.git("rev-parse", "main")
    bomb = (
        "i=0; while [ $i -lt 640 ]; do head -c 1048576 /dev/zero > bomb$i; i=$((i+1)); done; "
        "echo wrote-everything"
    )
    report = attacker.exec(bomb)
    assert report["outcome"] == "blocked"
    assert report["agent"]["outcome"] == "disk-limit", report["agent"]["detail"]
    assert violations(report)["DISK_LIMIT"] == "critical"
    assert attacker.git("rev-parse", "main") == before
    assert not list(attacker.repo.rglob("bomb1"))  # rolled back: the workspace is gone too


def test_processes_together_over_the_budget_are_killed(attacker: Any) -> None:
    if attacker.user != "root" or not detect().available:
        # No cgroup for this user here: each process is bounded by RLIMIT_AS, their sum
        # is not. What capataz owes the user then is to say so.
        doctor = attacker.capataz("doctor", "--json")
        checks = {c["name"]: c["detail"] for c in json.loads(doctor.stdout)}
        assert checks["run limits"].startswith("no cgroup per run"), checks
        assert "limited per process" in checks["run limits"]
        return
    configure(attacker, memory="160MiB")
    hog = "python3 -c 'import time; b = bytearray(70 * 1024**2); time.sleep(3)'"
    report = attacker.exec(f"for i in 1 2 3 4; do {hog} & done; wait; echo survived > out.txt")
    assert report["agent"]["outcome"] == "memory-limit", report["agent"]["detail"]
    assert report["agent"]["peak_memory_bytes"] <= 160 * MiB
    assert violations(report)["MEMORY_LIMIT"] == "high"
    assert report["outcome"] == "blocked"


# Forks until the process limit refuses, then cleans up and reports how far it got.
FORK_BOMB = """\
import json, os, resource, signal
limit = resource.getrlimit(resource.RLIMIT_NPROC)[0]
children = []
try:
    while len(children) < 10000:
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        children.append(pid)
except OSError:
    pass
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
open("forked.txt", "w").write(json.dumps({"forked": len(children), "limit": limit}))
"""


def test_a_fork_bomb_is_bounded_by_the_process_limit(attacker: Any) -> None:
    script = attacker.repo / "bomb.py"
    script.write_text(FORK_BOMB)
    os.chown(script, attacker.uid, attacker.uid)
    attacker.git("add", "bomb.py")
    configure(attacker, processes=32)
    report = attacker.exec("python3 bomb.py")
    assert report["outcome"] == "landed", report["reason"]
    seen = json.loads(landed(attacker, "forked.txt"))
    forked, limit = seen["forked"], seen["limit"]
    if attacker.user == "root":  # the leased uid runs nothing else: the limit is exact
        assert limit == 32
    else:  # RLIMIT_NPROC counts the user's other processes too: capataz grants 32 on top
        # of those it counted at the start (other suites' included, on a shared machine)
        assert 32 <= limit < 32 + 10_000 and limit != resource.RLIM_INFINITY
    assert 0 < forked < limit  # the bomb stopped at the limit, far below its 10,000
