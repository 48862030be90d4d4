"""One exception family, so callers (the CLI above all) can catch everything capataz
raises on purpose with a single ``except CapatazError`` and print one clear line."""

from __future__ import annotations

__all__ = [
    "CapatazError",
    "ConfigError",
    "EscalationError",
    "GitError",
    "Interrupted",
    "QueueRefusedError",
    "QueueUnavailable",
    "SandboxError",
    "TaskError",
    "Unavailable",
    "UnknownAgentError",
]


class CapatazError(Exception):
    """Base of every error capataz raises deliberately.

    ``fix`` is the sentence that tells the user what to do; the CLI prints it after the
    problem so every failure reads as "what went wrong — how to fix it".
    """

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class ConfigError(CapatazError):
    """capataz.toml is missing, unreadable or invalid."""


class UnknownAgentError(CapatazError):
    """A task names an agent that the configuration does not define."""


class GitError(CapatazError):
    """A git command capataz needed failed (not a repository, unknown commit, ...)."""


class SandboxError(CapatazError):
    """The sandbox could not be started (no bwrap, user namespaces refused, ...)."""


class EscalationError(CapatazError):
    """An escalation answer was invalid or arrived for a task that is not waiting."""


class TaskError(CapatazError):
    """A task id or task state does not allow the requested operation."""


class Unavailable(CapatazError):
    """Something capataz depends on is away for now (the database, the control plane)
    and may come back by itself. The one transient kind: a runner retries exactly these
    (see :mod:`capataz.retry`); every other error is a bug or a refusal and surfaces at
    once, because retrying it for minutes would only hide it."""


class QueueUnavailable(Unavailable):
    """The control plane a remote runner works through did not answer (network error,
    timeout, server restarting, 5xx): transient, the runner retries with backoff."""


class QueueRefusedError(CapatazError):
    """The control plane refused the runner's credentials (401/403) or request (4xx):
    retrying would not help; the runner stops with this one line."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached a command that runs a task in the foreground.

    A KeyboardInterrupt on purpose: the pipeline rolls back on it exactly as on Ctrl-C
    (a closed terminal or a ``kill`` must not leave a half-run task behind)."""

    def __init__(self, signal_name: str, signal_number: int) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = 128 + signal_number
