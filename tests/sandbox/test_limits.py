"""Limits that bind the whole run: tmpfs sized to the memory budget, a cgroup per run,
the disk limit on the workspace, and ``"unlimited"``. Real bubblewrap, real writes.

The cgroup tests need a machine that delegates cgroups to capataz (here: cgroup v1 as
root). Where it does not, they skip and say why; the v2 code path only runs on a v2
machine, so on this v1 machine it is exercised by nothing here."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capataz.config import Limits, parse_config
from capataz.errors import ConfigError
from capataz.sandbox import BwrapSandbox
from capataz.sandbox.base import ExecOutcome, Sandbox, SandboxSpec
from capataz.sandbox.cgroups import detect

Run = Callable[..., Any]
MiB = 1024**2

needs_cgroup = pytest.mark.skipif(
    not detect().available, reason=f"no cgroup per run on this machine: {detect().reason}"
)


def sizes(ran: Any) -> dict[str, int]:
    """``name bytes`` lines the command printed."""
    found = {}
    for line in ran.out:
        name, _, value = line.partition(" ")
        if value.isdigit():
            found[name] = int(value)
    return found


# Tries to put 100 MiB into every place a sandboxed process can write without touching
# the workspace, then prints how much each really holds.
FILL = """
echo settings > "$HOME/.agentrc" && echo "home-writable 1"
for place in /dev/shm /tmp "$HOME" /run /var/tmp /root /dev; do
  head -c 104857600 /dev/zero > "$place/fill" 2>/dev/null
  echo "$place $(stat -c %s "$place/fill" 2>/dev/null || echo 0)"
done
"""


def test_tmpfs_holds_less_than_the_memory_budget(run: Run, bwrap: BwrapSandbox) -> None:
    ran = run(bwrap, FILL, memory=64 * MiB)
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    held = sizes(ran)
    assert held["/dev/shm"] <= 16 * MiB
    assert held["/tmp"] + held["/tmp/home"] <= 32 * MiB
    assert held["home-writable"] == 1  # agents keep their dotfiles in HOME (in /tmp)
    for read_only in ("/run", "/var/tmp", "/root", "/dev"):
        assert held.get(read_only, 0) == 0, read_only
    assert held["/dev/shm"] + held["/tmp"] + held["/tmp/home"] <= 64 * MiB


def test_the_hidden_repository_is_not_writable(bwrap: BwrapSandbox, repo: Path) -> None:
    workspace = repo / ".capataz" / "ws"  # where capataz puts workspaces: inside the repo
    workspace.mkdir(parents=True)
    spec = SandboxSpec(
        argv=["sh", "-c", f"echo x > {repo}/planted || echo refused; echo ok > mine"],
        workspace=workspace,
        limits=Limits(timeout=20, idle_timeout=None),
        hide=[repo],
    )
    lines: list[str] = []
    result = bwrap.run(spec, lambda line: lines.append(line.text))
    assert result.outcome is ExecOutcome.OK, lines
    assert "refused" in lines
    assert not (repo / "planted").exists()
    assert (workspace / "mine").read_text() == "ok\n"  # the workspace inside stays writable


def test_unlimited_memory_lifts_the_limit(run: Run, bwrap: BwrapSandbox, python3: str) -> None:
    grab = [python3, "-c", "b = bytearray(300 * 1024**2); print('allocated')"]
    assert run(bwrap, grab, memory=128 * MiB).result.outcome is not ExecOutcome.OK
    ran = run(bwrap, grab, memory=None)
    assert ran.result.outcome is ExecOutcome.OK, ran.text
    assert "allocated" in ran.out


def test_unlimited_and_bad_sizes_in_the_config() -> None:
    config = parse_config('[agents.big]\ncommand = ["x"]\nmemory = "unlimited"\ndisk = "5GiB"\n')
    assert config.agents["big"].memory is None
    assert config.agents["big"].disk == 5 * 1024**3
    assert Limits().disk == 2 * 1024**3
    with pytest.raises(ConfigError) as caught:
        parse_config('[[gates]]\nname = "g"\nrun = "true"\ndisk = "lots"\n')
    assert "capataz.toml:4: gates.0.disk: 'lots' is not a size" in str(caught.value)
    assert "'unlimited'" in str(caught.value)
    assert "\n" not in str(caught.value)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cgroup_dir(pid: int) -> Path:
    """The memory cgroup directory of a host pid (v1 or v2)."""
    layout = detect()
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        wanted = "memory" in controllers.split(",") if layout.version == 1 else controllers == ""
        if wanted:
            root = Path("/sys/fs/cgroup/memory" if layout.version == 1 else "/sys/fs/cgroup")
            return root / path.lstrip("/")
    raise AssertionError(f"no memory cgroup for {pid}: {lines}")


@needs_cgroup
def test_each_run_gets_a_cgroup_with_its_limits_that_goes_away(
    run: Run, bwrap: BwrapSandbox, host_pids: Callable[[str], list[int]]
) -> None:
    marker = f"30.{int.from_bytes(os.urandom(4), 'big')}"  # sleep's own argv: unique
    layout = detect()
    seen: dict[str, Any] = {}

    def look() -> bool:  # called by the supervisor while the run is alive
        for pid in host_pids(marker):
            if not seen and _comm(pid) == "sleep":  # the command itself, not a wrapper
                directory = _cgroup_dir(pid)
                pids_dir = directory
                if layout.version == 1 and layout.pids_parent is not None:
                    pids_dir = layout.pids_parent / directory.name
                seen["dirs"] = [directory, pids_dir]
                seen["memory"] = (directory / layout.memory_limit_file).read_text().strip()
                seen["pids"] = (pids_dir / "pids.max").read_text().strip()
        return bool(seen)

    ran = run(bwrap, f"exec sleep {marker}", memory=96 * MiB, processes=16, should_stop=look)
    assert ran.result.outcome is ExecOutcome.CANCELLED
    assert seen["dirs"][0].name.startswith("capataz-")
    assert (seen["memory"], seen["pids"]) == (str(96 * MiB), str(16 + 2))  # + bwrap, init
    assert not any(directory.exists() for directory in seen["dirs"])  # removed with the run
    assert host_pids(marker) == []


@needs_cgroup
def test_processes_together_over_the_budget_are_killed(
    run: Run, bwrap: BwrapSandbox, python3: str
) -> None:
    # Each stays under RLIMIT_AS (160 MiB); four of them want about 280 MiB.
    hog = f"{python3} -c 'import time; b = bytearray(70 * 1024**2); time.sleep(3)'"
    ran = run(bwrap, f"for i in 1 2 3 4; do {hog} & done; wait; echo survived", memory=160 * MiB)
    assert ran.result.outcome is ExecOutcome.MEMORY_LIMIT, ran.result.detail
    assert "memory limit of 160.0 MiB" in ran.result.detail
    assert ran.result.peak_memory_bytes <= 160 * MiB


@needs_cgroup
def test_peak_memory_counts_what_the_run_put_in_tmpfs(run: Run, bwrap: BwrapSandbox) -> None:
    ran = run(bwrap, "head -c 50000000 /dev/zero > /tmp/data", memory=256 * MiB)
    assert ran.result.outcome is ExecOutcome.OK
    assert ran.result.peak_memory_bytes >= 50_000_000


def test_a_run_writing_past_its_disk_limit_is_killed(
    run: Run, bwrap: BwrapSandbox, workspace: Path
) -> None:
    # 1 MiB files stay under file_size; the sum does not; the sleep is never reached.
    ran = run(
        bwrap,
        "i=0; while [ $i -lt 40 ]; do head -c 1048576 /dev/zero > f$i; i=$((i+1)); done; "
        "echo written; sleep 30",
        disk=20 * MiB,
        file_size=MiB,
    )
    assert ran.result.outcome is ExecOutcome.DISK_LIMIT, ran.result.detail
    assert "disk limit of 20.0 MiB; killed" in ran.result.detail


def test_a_run_that_wrote_too_much_before_any_check_is_caught_after(
    run: Run, sandbox: Sandbox, workspace: Path
) -> None:
    ran = run(sandbox, "head -c 30000000 /dev/zero > big", disk=10 * MiB)
    assert ran.result.outcome is ExecOutcome.DISK_LIMIT, ran.result.detail
    assert "over its disk limit of 10.0 MiB" in ran.result.detail


def test_only_what_the_run_writes_counts(run: Run, bwrap: BwrapSandbox, workspace: Path) -> None:
    (workspace / "existing.bin").write_bytes(os.urandom(30 * MiB))
    time.sleep(0.01)  # a later clock tick than the file's
    ran = run(bwrap, "echo hi > small && truncate -s 60M sparse", disk=10 * MiB)
    assert ran.result.outcome is ExecOutcome.OK, ran.result.detail
    assert (workspace / "sparse").stat().st_size == 60 * MiB  # sparse: no blocks, no count
