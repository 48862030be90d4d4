"""`capataz doctor --agent NAME`: will this one agent start, and reach what it needs?

An agent that cannot start fails its first task with an exit 127 or a crash, and one
that has no way to its model API or no key fails it a minute later: both after a task
was queued, a workspace made and a runner spent. These checks say the same things
before any of that, each with the sentence that fixes it:

* its command and every interpreter it needs, resolved on the host the way the
  sandbox's ``execvp`` would (the agent's PATH, every symlink, each ``#!`` line), and
  whether a mask hides one of them (the same resolution an exit 127 is explained with,
  capataz.gates.agent_hints);
* ``<command> --version`` in the real sandbox with the agent's own environment, limits
  and network, so what the check sees is what a run sees;
* its endpoint through its network allowance (for an allowlist: the proxy and bridge
  trial of ``capataz doctor``), a TCP connection from inside the sandbox;
* each credential it needs is PROVIDED in the vault (names only; no value is read).
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from capataz.agents.commands import agent_env, resolve_agent
from capataz.agents.preset import endpoint_address
from capataz.agents.presets import preset_named
from capataz.config import AgentConfig, Config
from capataz.errors import CapatazError
from capataz.gates.agent_hints import (
    command_files,
    expose_entries,
    expose_fix,
    hiding_mask,
    memory_hint,
    missing_command_hint,
)
from capataz.gates.network import agent_network_key
from capataz.sandbox import get_sandbox
from capataz.sandbox.base import ExecOutcome, Sandbox, SandboxSpec
from capataz.sandbox.cache import agent_cache_dir
from capataz.sandbox.network import network_setting
from capataz.sandbox.process import BASE_ENV
from capataz.secrets.credentials import requests_for
from capataz.setup.doctor import BRIDGE_FIX, Check, run_trial
from capataz.workspace.repo import Repository

__all__ = ["StoredNames", "doctor_agent"]

StoredNames = Callable[[Sequence[str]], Collection[str]]
"""Given secret names, those the vault holds (PROVIDED); never their values."""

_TRIAL_TIMEOUT = 60.0  # seconds: a --version or a connection that takes longer is broken
_SHOWN = 200  # characters of a line the agent printed

# Connect to $1 (host:port) through the proxy when the sandbox has one (an allowlist:
# CONNECT, whose status line is the proxy's verdict), else directly to $2:$3; then, for
# a plain http:// endpoint ($4 = http), ask for / and print the answer's status line.
_PROBE = r"""
if [ -n "${HTTPS_PROXY:-}" ]; then
  proxy=${HTTPS_PROXY##*:}; proxy=${proxy%%/*}
  exec 3<>"/dev/tcp/127.0.0.1/$proxy" || exit 3
  printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
  IFS=$'\r' read -r -t 20 status <&3 || { echo "the proxy did not answer"; exit 4; }
  case "$status" in
    "HTTP/1."?" 200"*) while IFS=$'\r' read -r -t 20 line <&3 && [ -n "$line" ]; do :; done ;;
    *) echo "the proxy answered: $status"; exit 1 ;;
  esac
else
  exec 3<>"/dev/tcp/$2/$3" || exit 2
fi
echo "connected to $1"
if [ "$4" = http ]; then
  printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" >&3
  IFS=$'\r' read -r -t 20 status <&3 && echo "answered: $status"
fi
exit 0
"""


def doctor_agent(
    config: Config, name: str, *, repo: Repository | None, stored: StoredNames | None
) -> list[Check]:
    """The checks of agent ``name`` (UnknownAgentError when there is none). ``repo``:
    the repository the sandbox hides (None outside one); ``stored``: which secrets the
    vault holds (None: there is no vault here)."""
    agent = resolve_agent(config, name)
    hide = [repo.root, repo.common_dir] if repo is not None else []
    search_path = agent_env(agent).get("PATH") or BASE_ENV["PATH"]
    argv = agent.command or []
    unisolated = config.project.sandbox == "none"
    expose = ["/"] if unisolated else config.sandbox.expose  # nothing is masked without one
    checks = _command(argv, name, search_path, expose, hide)
    if unisolated:
        checks.append(
            Check(
                "sandbox",
                False,
                'sandbox = "none": the agent runs unisolated (nothing is masked)',
                'set [project] sandbox = "bwrap" in capataz.toml',
            )
        )
    try:
        sandbox = get_sandbox(config.project.sandbox, config.sandbox)
        problems = sandbox.check()
    except CapatazError as exc:
        problems = [exc.message]
    if problems:
        checks.append(
            Check("sandbox", False, "; ".join(problems), "run `capataz doctor`; fix what it says")
        )
    else:
        with tempfile.TemporaryDirectory(prefix="capataz-doctor-") as tmp:
            run = _Trials(sandbox, agent, name=name, workspace=Path(tmp), hide=hide, repo=repo)
            checks.append(run.version(argv, search_path, expose))
            if agent.endpoint is not None:
                checks.append(run.endpoint(agent.endpoint))
    return checks + _credentials(config, agent, name, stored)


def _command(
    argv: Sequence[str], name: str, search_path: str, expose: Sequence[str], hide: Sequence[Path]
) -> list[Check]:
    """One check for the command and one per interpreter it needs: found, and visible."""
    if not argv:
        return [Check("command", False, "the agent has no command", "give it a command")]
    files = command_files(argv[0], search_path)
    if not files:
        return [
            Check(
                "command",
                False,
                f"{argv[0]!r} is not on the sandbox's PATH ({search_path})",
                f"use its absolute path in the agent's command, or set PATH in [agents.{name}] env",
            )
        ]
    checks: list[Check] = []
    for program in range(files[-1].program + 1):
        group = [f for f in files if f.program == program]
        label = "command" if program == 0 else "interpreter"
        chain = " → ".join(str(f.path) for f in group)
        # "node: /usr/bin/node", but a #! line's absolute path is not said twice
        named = "" if group[0].name == str(group[0].path) else f"{group[0].name}: "
        hidden = [
            (f.path, mask)
            for f in group
            if (mask := hiding_mask(f.path, expose=expose, hide=hide)) is not None
        ]
        missing = next((f.path for f in group if not f.exists), None)
        if hidden:
            path, mask = hidden[0]
            which = "the repository" if Path(mask) in hide else mask
            detail = (
                f"{named}{path} is under {which}, which the sandbox masks "
                "(an empty directory inside)"
            )
            checks.append(Check(label, False, detail, expose_fix(expose_entries(hidden))))
        elif missing is not None:
            checks.append(
                Check(
                    label,
                    False,
                    f"{named}{missing} does not exist",
                    "install it, or fix the agent's command in capataz.toml",
                )
            )
        else:
            checks.append(Check(label, True, f"{named}{chain}"))
    return checks


class _Trials:
    """Runs in the real sandbox with the agent's environment, limits and network (its
    secrets stay in the vault: neither ``--version`` nor a connection needs them)."""

    def __init__(
        self,
        sandbox: Sandbox,
        agent: AgentConfig,
        *,
        name: str,
        workspace: Path,
        hide: list[Path],
        repo: Repository | None,
    ) -> None:
        self.sandbox = sandbox
        self.agent = agent
        self.name = name
        self.limits = agent.model_copy(
            update={"timeout": min(agent.timeout, _TRIAL_TIMEOUT), "idle_timeout": None}
        )
        self.workspace = workspace
        self.hide = hide
        self.cache = agent_cache_dir(repo.root, name) if repo is not None and agent.cache else None

    def _spec(self, argv: list[str]) -> SandboxSpec:
        key = agent_network_key(self.name)
        return SandboxSpec(
            argv=argv,
            workspace=self.workspace,
            limits=self.limits,
            hide=self.hide,
            env=agent_env(self.agent),
            network=network_setting(self.agent.network, key),
            cache=self.cache,
        )

    def version(self, argv: Sequence[str], search_path: str, expose: Sequence[str]) -> Check:
        """``<command> --version``: it starts, under these limits, and says what it is."""
        spec = self._spec([argv[0], "--version"])
        trial = run_trial(self.sandbox, spec, "")
        if trial.result is None:
            error = trial.error
            return Check("version", False, trial.detail, (error.fix or "") if error else "")
        result, said = trial.result, _shown(trial.stdout or trial.output)
        if result.ok:
            return Check("version", True, said or f"{argv[0]} --version printed nothing")
        if result.outcome is not ExecOutcome.FAILED:  # a timeout, a memory limit, ...
            return Check(
                "version",
                False,
                f"{argv[0]} --version: {result.detail or result.outcome.value}",
                f"raise timeout or memory for [agents.{self.name}], or fix its command",
            )
        if result.exit_code in (126, 127):
            missing, fix = missing_command_hint(
                argv, search_path=search_path, expose=expose, hide=self.hide
            )
            return Check("version", False, f"exit code {result.exit_code}: {missing}", fix)
        if result.signal is not None:
            how = f"killed by {signal.Signals(result.signal).name}"
            hint = memory_hint(result.signal, self.agent.memory, result.wall_seconds)
            return Check(
                "version",
                False,
                f"{argv[0]} --version: {how}",
                hint or f"run `{argv[0]} --version` outside capataz to see why it dies",
            )
        return Check(
            "version",
            False,
            f"{argv[0]} --version: exit code {result.exit_code}" + (f": {said}" if said else ""),
            f"read what it printed; [agents.{self.name}] env is all it gets beyond a clean "
            "environment",
        )

    def endpoint(self, endpoint: str) -> Check:
        """A TCP connection to the endpoint's host:port from inside the sandbox, through
        the agent's network allowance; any answer at all means it is reachable."""
        address = endpoint_address(endpoint)
        key = agent_network_key(self.name)
        network = network_setting(self.agent.network, key)
        if network is False:
            return Check(
                "endpoint",
                False,
                f"{endpoint}: the agent has no network (network = false), so it cannot "
                f"reach {address}",
                f'allow it: {key} = ["{address}"] in capataz.toml',
            )
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", address.rsplit(":", 1)[1]
        probe = ["bash", "-c", _PROBE, "probe", address, host, port, parts.scheme]
        trial = run_trial(self.sandbox, self._spec(probe), address)
        answer = next((t for t in trial.output if t.startswith("answered: ")), "")
        answered = f"; {answer[len('answered: ') :]}" if answer else ""
        if trial.reached:
            how = "the host's network" if network is True else "the proxy"
            return Check("endpoint", True, f"{address} reachable through {how}{answered}")
        record = trial.record
        if trial.error is not None:
            fix = trial.error.fix or BRIDGE_FIX
        elif record is not None and not record.allowed:
            fix = f'add "{address}" to {key}'
        elif record is not None or network is True:
            fix = f"check that {endpoint} is up, and that this machine can reach it"
        else:
            fix = BRIDGE_FIX
        return Check("endpoint", False, f"{endpoint}: {trial.detail}", fix)


def _shown(lines: Sequence[str]) -> str:
    """The first line the agent printed (on stdout when it printed any there: a warning
    on stderr is not its version), short enough for one report line."""
    text = lines[0].strip() if lines else ""
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _credentials(
    config: Config, agent: AgentConfig, name: str, stored: StoredNames | None
) -> list[Check]:
    """One check per secret the agent needs: its own ``secrets`` and its preset's
    credential. PROVIDED means the vault has the name; nothing is decrypted."""
    needed = list(agent.secrets)
    credential = preset_named(agent.preset).credential if agent.preset else None
    if credential is not None and credential not in needed:
        needed.append(credential)
    if not needed:
        return []
    try:
        provided = set(stored(needed)) if stored is not None else None
        unreadable = ""
    except CapatazError as exc:
        provided, unreadable = None, exc.message
    checks: list[Check] = []
    for secret in needed:
        label = f"credential {secret}"
        if provided is None:
            why = unreadable or "no vault here (not in a git repository)"
            checks.append(Check(label, False, why, "run the doctor inside the project"))
            continue
        requests = requests_for(config, secret)
        if secret not in provided:
            declared = f"request {', '.join(requests)}" if requests else "no [[requests]] entry"
            checks.append(
                Check(label, False, f"WAITING: not in the vault ({declared})", _set(secret))
            )
        elif secret not in agent.secrets:
            checks.append(
                Check(
                    label,
                    False,
                    "PROVIDED, but the agent's secrets do not list it: it never sees it",
                    f'add "{secret}" to [agents.{name}] secrets',
                )
            )
        else:
            checks.append(Check(label, True, "PROVIDED in the vault"))
    return checks


def _set(secret: str) -> str:
    return f"store it: capataz secret set {secret}"
