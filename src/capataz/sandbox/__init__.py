"""Sandbox backends by short name, as ``[project] sandbox`` in capataz.toml names them."""

from __future__ import annotations

from collections.abc import Callable

from capataz.config import SandboxOptions
from capataz.errors import SandboxError
from capataz.sandbox.base import (
    ExecOutcome,
    ExecResult,
    OutputLine,
    OutputSink,
    Sandbox,
    SandboxSpec,
)
from capataz.sandbox.bwrap import BwrapSandbox
from capataz.sandbox.unsandboxed import UnsandboxedSandbox

__all__ = [
    "SANDBOXES",
    "BwrapSandbox",
    "ExecOutcome",
    "ExecResult",
    "OutputLine",
    "OutputSink",
    "Sandbox",
    "SandboxSpec",
    "UnsandboxedSandbox",
    "get_sandbox",
]

SANDBOXES: dict[str, Callable[[SandboxOptions], Sandbox]] = {
    "bwrap": BwrapSandbox,
    "none": UnsandboxedSandbox,
}


def get_sandbox(name: str, options: SandboxOptions | None = None) -> Sandbox:
    """The backend called ``name``, configured with the ``[sandbox]`` options."""
    try:
        factory = SANDBOXES[name]
    except KeyError:
        known = ", ".join(repr(known) for known in SANDBOXES)
        raise SandboxError(
            f"unknown sandbox {name!r}; known sandboxes: {known}",
            fix='set [project] sandbox = "bwrap" (or "none" to run unisolated)',
        ) from None
    return factory(options or SandboxOptions())
