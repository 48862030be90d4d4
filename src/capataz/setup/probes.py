"""`capataz doctor --probe`: the escape attempts of capataz's red-team tests, run on the
user's own machine, in their own sandbox configuration, with a containment table.

A sandbox that works on the developers' machines may not on yours (another kernel,
another bubblewrap, AppArmor, no cgroups, running as root or not). Each probe is what an
agent in control of its sandbox would try; it runs in a workspace of a scratch
repository laid out exactly as a task's (the repository hidden, its objects read-only,
the workspace's git directory read-only at ``.git``) with the sandbox options of your
``capataz.toml``. A probe's script prints ``ESCAPED`` when the forbidden thing worked;
some are also checked from the host (a listener that must not be reached, a process
that must not survive, a file that must not change). Resource probes use small limits
of their own so that proving a cap never costs much memory or disk.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from capataz.config import AgentConfig, Config
from capataz.sandbox import get_sandbox
from capataz.sandbox.base import ExecOutcome, ExecResult, Sandbox, SandboxSpec
from capataz.sandbox.network import network_setting
from capataz.workspace.isolated import Workspace
from capataz.workspace.repo import Repository, create_repository

__all__ = ["PROBES", "Probe", "ProbeResult", "run_probes"]

_CANARY = "capataz-probe-canary"
_RAN = "capataz-probe-started"
_SMALL = 64 * 1024 * 1024  # the memory budget the tmpfs probe runs under


@dataclass(frozen=True)
class ProbeResult:
    name: str
    attempt: str  # what the agent tried, in a few words
    contained: bool
    detail: str


@dataclass
class _Scene:
    """Everything a probe may refer to: host paths, the listener, unique markers."""

    repo: Repository
    workspace: Workspace
    port: int
    marker: str = field(default_factory=lambda: f"9{secrets.randbelow(10**6):06d}")

    @property
    def values(self) -> dict[str, str]:
        return {
            "repo": str(self.repo.root),
            "objects": str(self.repo.common_dir / "objects"),
            "port": str(self.port),
            "marker": self.marker,
            "home": str(Path("~").expanduser()),
            "canary": _CANARY,
        }


@dataclass(frozen=True)
class Probe:
    name: str
    attempt: str
    script: str  # POSIX sh; {placeholders} from _Scene.values; prints ESCAPED when it got out
    limits: dict[str, object] = field(default_factory=dict)  # overrides of the agent's limits
    host_check: Callable[[_Scene, ExecResult], str | None] | None = None  # problem or None


def _leftover(scene: _Scene, _result: ExecResult) -> str | None:
    found = subprocess.run(
        ["pgrep", "-f", f"sleep {scene.marker}"], capture_output=True, text=True, check=False
    )
    if found.stdout.strip():
        subprocess.run(["pkill", "-9", "-f", f"sleep {scene.marker}"], check=False)
        return "a background process outlived the run"
    return None


def _repository_intact(scene: _Scene, _result: ExecResult) -> str | None:
    if (scene.repo.root / "README.md").read_text() != "# probe\n":
        return "README.md of the repository was changed from inside"
    return None


def _system_intact(_scene: _Scene, _result: ExecResult) -> str | None:
    for path in ("/etc/capataz-probe", "/usr/capataz-probe"):
        if Path(path).exists():
            Path(path).unlink()
            return f"{path} was created on the host"
    return None


def _disk_stopped(_scene: _Scene, result: ExecResult) -> str | None:
    if result.outcome is ExecOutcome.DISK_LIMIT:
        return None
    return f"the run was not stopped for its writes (it ended {result.outcome.value})"


PROBES: tuple[Probe, ...] = (
    Probe(
        "repository write",
        "overwrite a file of your repository",
        "echo pwned > {repo}/README.md 2>/dev/null && grep -q pwned {repo}/README.md"
        " && echo ESCAPED",
        host_check=_repository_intact,
    ),
    Probe(
        "repository read",
        "read an untracked file of your repository (a .env)",
        "grep -qs {canary} {repo}/.env && echo ESCAPED",
    ),
    Probe(
        "capataz state",
        "read capataz's database, keys and other tasks' evidence",
        "grep -qs {canary} {repo}/.capataz/capataz.db && echo ESCAPED",
    ),
    Probe(
        "home",
        "read your home's keys and credentials",
        "for d in .ssh .aws .config .gnupg .netrc .git-credentials; do"
        " ls -A {home}/$d 2>/dev/null | grep -q . && echo ESCAPED $d; done",
    ),
    Probe(
        "system write",
        "write into /etc and /usr",
        "touch /etc/capataz-probe 2>/dev/null && echo ESCAPED;"
        " touch /usr/capataz-probe 2>/dev/null && echo ESCAPED",
        host_check=_system_intact,
    ),
    Probe(
        "git hooks and config",
        "plant a hook or config in the task's git directory",
        "echo 'touch /tmp/x' > .git/hooks/pre-commit 2>/dev/null && echo ESCAPED;"
        " echo '[core] hooksPath = /tmp' >> .git/config 2>/dev/null && echo ESCAPED",
    ),
    Probe(
        "object store",
        "write into your repository's object store",
        "touch {objects}/capataz-probe 2>/dev/null && echo ESCAPED",
    ),
    Probe(
        "network",
        "connect to a listener on the host's loopback",
        "(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo ESCAPED",
    ),
    Probe(
        "leftover process",
        "leave a process running after the task ends",
        "(setsid sleep {marker} >/dev/null 2>&1 &); (nohup sleep {marker} >/dev/null 2>&1 &);"
        " echo started",
        host_check=_leftover,
    ),
    Probe(
        "privileges",
        "keep root or a capability",
        '[ "$(id -u)" = 0 ] && [ ! -r /proc/self/uid_map ] && echo ESCAPED root;'
        " grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status || echo ESCAPED capabilities",
    ),
    Probe(
        "terminal",
        "open your terminal to type commands into it (TIOCSTI)",
        "(exec 3</dev/tty) 2>/dev/null && echo ESCAPED",
    ),
    Probe(
        "process limit",
        "start more processes than the limit allows (64 here)",
        "n=0; while [ $n -lt 80 ]; do sleep 30 2>/dev/null & n=$((n+1)); done 2>/dev/null;"
        " [ $(ls /proc | grep -c '^[0-9]') -gt 70 ] && echo ESCAPED; kill $(jobs -p) 2>/dev/null",
        limits={"processes": 64},
    ),
    Probe(
        "memory through tmpfs",
        "store more than the run's memory budget (64 MiB here) in /dev/shm and /tmp",
        "head -c 48m /dev/zero > /dev/shm/fill 2>/dev/null;"
        " head -c 48m /dev/zero > /tmp/fill 2>/dev/null;"
        " used=$(du -smc /dev/shm/fill /tmp/fill 2>/dev/null | tail -n 1 | cut -f1);"
        ' [ "${{used:-0}}" -gt 64 ] && echo ESCAPED stored ${{used}} MiB',
        limits={"memory": _SMALL},
    ),
    Probe(
        "disk",
        "write more into its workspace than the disk limit (64 MiB here)",
        "head -c 160m /dev/zero > fill.bin 2>/dev/null; sleep 2",
        limits={"disk": _SMALL},
        host_check=_disk_stopped,
    ),
)


def run_probes(
    config: Config, agent: AgentConfig, probes: Sequence[Probe] = PROBES
) -> list[ProbeResult]:
    """Run the probes in the configured sandbox; one result per probe."""
    sandbox = get_sandbox(config.project.sandbox, config.sandbox)
    with tempfile.TemporaryDirectory(prefix="capataz-probe-") as tmp:
        root = Path(tmp).resolve()
        root.chmod(0o755)  # as a real repository is: the sandbox uid must reach it
        repo = _scratch_repository(root / "repo")
        base = repo.branch_tip("main")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            results = []
            for number, probe in enumerate(probes):
                workspace = Workspace.create(
                    repo, f"probe-{number}", base, repo.root / ".capataz" / "workspaces"
                )
                scene = _Scene(repo, workspace, listener.getsockname()[1])
                results.append(_run_one(sandbox, agent, probe, scene, listener))
                workspace.discard()
    return results


def _run_one(
    sandbox: Sandbox, agent: AgentConfig, probe: Probe, scene: _Scene, listener: socket.socket
) -> ProbeResult:
    limits = agent.model_copy(update={"timeout": 60.0, "idle_timeout": None, **probe.limits})
    lines: list[str] = []
    spec = SandboxSpec(
        argv=["bash", "-c", f"echo {_RAN}; " + probe.script.format(**scene.values)],
        workspace=scene.workspace.tree,
        limits=limits,
        git_dir=scene.workspace.git_dir,
        read_only=[scene.repo.common_dir / "objects"],
        hide=[scene.repo.root, scene.repo.common_dir],
        network=network_setting(agent.network, "the agent's network"),
    )
    result = sandbox.run(spec, lambda line: lines.append(line.text))
    if _RAN not in lines:  # it never started: its silence would prove nothing
        why = result.detail or f"exit code {result.exit_code}"
        return ProbeResult(probe.name, probe.attempt, False, f"the probe did not run: {why}")
    problems = [line for line in lines if line.startswith("ESCAPED")]
    if probe.host_check is not None:
        found = probe.host_check(scene, result)
        if found:
            problems.append(found)
    if probe.name == "network":
        try:
            connection, _ = listener.accept()
            connection.close()
            problems.append("the host's loopback listener was reached")
        except BlockingIOError:
            pass
        if agent.network and problems:
            return ProbeResult(
                probe.name, probe.attempt, True, "allowed: this agent has network = true"
            )
    if problems:
        return ProbeResult(probe.name, probe.attempt, False, "; ".join(problems))
    return ProbeResult(probe.name, probe.attempt, True, "contained")


def _scratch_repository(path: Path) -> Repository:
    """A repository with one commit and an untracked secret-looking file, as users have."""
    repo = create_repository(path, {"README.md": "# probe\n", ".gitignore": ".capataz/\n.env\n"})
    (path / ".env").write_text(f"API_KEY={_CANARY}\n")
    (path / ".capataz").mkdir(mode=0o700)
    (path / ".capataz" / "capataz.db").write_text(_CANARY)
    return repo
