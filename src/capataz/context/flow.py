"""Context between tasks, inside one run of the pipeline.

Receiving: before the agent starts, the entries published by the tasks this one depends
on (its direct dependencies, filtered by its agent's ``context_read`` globs) are written
to ``.capataz/context.json`` in the workspace and substituted for ``{context}`` in the
agent's command (the same JSON text).

Publishing: an agent writes ``.capataz/context-out.json``, a JSON object::

    {"build.version": "1.2.3", "api": {"url": "http://..."}, "_ttl": "1h"}

Every member is one entry (any JSON value) except ``_ttl``, an optional lifetime for all
of them (``"30m"``, ``"1h"`` or seconds). capataz takes the file out of the workspace
*before* it commits, so it is never committed and never counts as a change to
capataz's protected ``.capataz/``; the entries are stored only when the run lands (or
completes with no changes), never for a blocked or rolled-back run. A file that is not
a regular file, too large, or not a JSON object, and keys that are invalid or outside
the agent's ``context_write`` globs, each yield a ``CONTEXT`` violation (medium by
default: a dependent would otherwise run without what it expects) and are not stored.

Exactly these two files are taken, through a directory descriptor opened without
following symlinks: a ``.capataz`` that is a symlink is never entered, and anything
else an agent writes under ``.capataz/`` stays and is judged by the protected-path
gate (critical).

Everything here works without a store (``capataz exec``): ``{context}`` is ``{}`` and a
publication is taken out of the workspace and reported, but not stored."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from capataz.config import AgentConfig, Config
from capataz.context.keys import ContextError, allowed, check_key, encode_value
from capataz.errors import CapatazError, TaskError
from capataz.models import Severity, Violation, ViolationType
from capataz.units import parse_duration

if TYPE_CHECKING:
    from capataz.context.store import ContextStore

__all__ = ["CONTEXT_DIR", "IN_FILE", "OUT_FILE", "ContextLink", "Publication"]


class Notes(Protocol):
    """Where a run's notes go (the pipeline's run log): context only reports into it."""

    def note(self, source: str, text: str) -> None: ...


CONTEXT_DIR = ".capataz"
IN_FILE = "context.json"  # what the task receives
OUT_FILE = "context-out.json"  # what the task publishes
MAX_PUBLICATION_BYTES = 1024 * 1024
# One argv element may not exceed 128 KiB on Linux (MAX_ARG_STRLEN): larger context
# reaches the agent through the file only.
MAX_ARGUMENT_BYTES = 64 * 1024
_TTL = "_ttl"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Publication:
    """What a run's agent published, checked; stored when the run lands."""

    entries: dict[str, Any] = field(default_factory=dict)
    ttl: float | None = None
    violations: list[Violation] = field(default_factory=list)


class ContextLink:
    """How one Supervisor reaches the context store.

    ``store`` None: no store (``capataz exec``; a remote runner's link,
    :class:`capataz.context_store.RemoteContextLink`, overrides :meth:`inputs` and
    :meth:`save` to go through the control plane). ``sources``: the tasks
    whose context a run receives; None means the task's own dependencies, read from the
    store. What a run should know (what it received, published) goes to its log."""

    def __init__(
        self, store: ContextStore | None = None, *, sources: Sequence[str] | None = None
    ) -> None:
        self.store = store
        self.sources = tuple(sources) if sources is not None else None

    # -- receiving ------------------------------------------------------------------

    def inputs(self, task_id: str, agent: AgentConfig) -> dict[str, Any]:
        """The entries this task receives (empty without a store or dependencies)."""
        if self.store is None:
            return {}
        try:
            sources = self.sources
            if sources is None:
                try:
                    sources = self.store.store.tasks.get(task_id).depends_on
                except TaskError:  # not a queued task
                    return {}
            return self.store.for_tasks(sources, read=agent.context_read)
        except CapatazError:
            raise
        except Exception as exc:  # a database error: this attempt fails (and is retried)
            raise ContextError(
                f"cannot read the context of {task_id}'s dependencies: {exc}",
                fix="check the database; the task is retried like any failed attempt",
            ) from exc

    def deliver(self, tree: Path, task_id: str, agent: AgentConfig, log: Notes) -> str:
        """Write ``.capataz/context.json`` into the workspace; the text for
        ``{context}``."""

        def note(text: str) -> None:
            log.note("capataz", text)

        received = self.inputs(task_id, agent)
        text = json.dumps(received, ensure_ascii=False, sort_keys=True, indent=None)
        if received:
            note(f"context received: {', '.join(sorted(received))}")
        try:
            _write_in_file(tree, text)
        except OSError as exc:
            note(f"context not written to {CONTEXT_DIR}/{IN_FILE}: {exc.strerror or exc}")
        if len(text.encode("utf-8")) > MAX_ARGUMENT_BYTES:
            note(f"context too large for the command line; {{context}} points at {IN_FILE}")
            return json.dumps({"_see": f"{CONTEXT_DIR}/{IN_FILE}"})
        return text

    # -- publishing -----------------------------------------------------------------

    @property
    def stores(self) -> bool:
        """Whether :meth:`publish` stores entries (a subclass may store them elsewhere:
        a remote runner's go to the control plane)."""
        return self.store is not None

    def save(self, task_id: str, publication: Publication) -> None:
        """Store a publication's entries in one go (raises when that fails)."""
        assert self.store is not None
        self.store.set_many(publication.entries, task_id=task_id, ttl=publication.ttl)

    def take(self, tree: Path, config: Config, agent_name: str) -> Publication:
        """Take both context files out of the workspace (before the commit) and check
        what the agent published against its ``context_write`` globs."""
        agent = config.agents[agent_name]
        severity = config.policy.severity_of(ViolationType.CONTEXT)
        raw, problem = _take_files(tree)
        publication = Publication()
        if problem:
            publication.violations.append(_violation(severity, problem))
        if raw is None:
            return publication
        _parse(raw, agent, severity, publication)
        return publication

    def publish(self, task_id: str, publication: Publication, log: Notes) -> None:
        """Store a landed run's entries. Best effort: the commit has landed already, so
        a failure here is reported in the run log instead of undoing the run."""
        if not publication.entries:
            return

        def note(text: str) -> None:
            log.note("capataz", text)

        keys = ", ".join(sorted(publication.entries))
        if not self.stores:
            note(f"context not stored (no context store for this run): {keys}")
            return
        try:
            self.save(task_id, publication)
        except Exception as exc:  # noqa: BLE001 - the run has landed; say so, go on
            note(f"context NOT published ({keys}): {exc}")
            return
        note(f"context published: {keys}")


def _violation(severity: Severity, details: str, suggestion: str = "") -> Violation:
    return Violation(
        type=ViolationType.CONTEXT,
        severity=severity,
        file=f"{CONTEXT_DIR}/{OUT_FILE}",
        details=details,
        suggestion=suggestion
        or f'write {CONTEXT_DIR}/{OUT_FILE} as a JSON object: {{"key": value, "_ttl": "1h"}}',
        gate="context",
    )


def _parse(raw: bytes, agent: AgentConfig, severity: Severity, into: Publication) -> None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        into.violations.append(_violation(severity, f"{OUT_FILE} is not valid JSON: {exc}"))
        return
    if not isinstance(data, dict):
        into.violations.append(
            _violation(severity, f"{OUT_FILE} holds a {type(data).__name__}, not an object")
        )
        return
    ttl = data.pop(_TTL, None)
    if ttl is not None:
        try:
            into.ttl = parse_duration(ttl)
            if into.ttl <= 0:
                raise ValueError("a TTL must be positive")
        except (TypeError, ValueError) as exc:
            into.violations.append(_violation(severity, f"{OUT_FILE}: _ttl: {exc}"))
            return
    for key, value in data.items():
        try:
            check_key(key)
            encode_value(key, value)
        except ContextError as exc:
            into.violations.append(_violation(severity, exc.message, exc.fix or ""))
            continue
        if not allowed(key, agent.context_write):
            into.violations.append(
                _violation(
                    severity,
                    f"agent may not publish context key {key!r} "
                    f"(context_write = {agent.context_write!r})",
                    "publish only keys the agent's context_write allows, or widen it "
                    "in capataz.toml",
                )
            )
            continue
        into.entries[key] = value


def _open_context_dir(tree: Path, *, create: bool) -> int | None:
    """A descriptor of ``tree/.capataz``, never through a symlink; None when it is
    missing (and not ``create``) or is not a real directory."""
    path = tree / CONTEXT_DIR
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir()
    try:
        return os.open(path, _OPEN_DIR)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP) and not create:
            return None
        raise


def _write_in_file(tree: Path, text: str) -> None:
    directory = _open_context_dir(tree, create=True)
    assert directory is not None
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(IN_FILE, flags, 0o644, dir_fd=directory)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
    finally:
        os.close(directory)


def _take_files(tree: Path) -> tuple[bytes | None, str]:
    """Read and remove the publication, remove the delivered context, and drop
    ``.capataz/`` when that leaves it empty. Returns (the publication's bytes or None,
    a problem to report or "")."""
    directory = _open_context_dir(tree, create=False)
    if directory is None:
        return None, ""
    try:
        raw, problem = _read_out_file(directory)
        for name in (OUT_FILE, IN_FILE):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(name, dir_fd=directory)  # a symlink itself, never its target
    finally:
        os.close(directory)
    with contextlib.suppress(OSError):
        (tree / CONTEXT_DIR).rmdir()  # only when empty; never follows a symlink
    return raw, problem


def _read_out_file(directory: int) -> tuple[bytes | None, str]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(OUT_FILE, flags, dir_fd=directory)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, f"{OUT_FILE} is a symlink; capataz does not follow it"
        return None, f"{OUT_FILE} cannot be read: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"{OUT_FILE} is not a regular file"
        if info.st_size > MAX_PUBLICATION_BYTES:
            return None, (
                f"{OUT_FILE} is {info.st_size} bytes; the limit is {MAX_PUBLICATION_BYTES}"
            )
        chunks = []
        remaining = MAX_PUBLICATION_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_PUBLICATION_BYTES:
            return None, f"{OUT_FILE} is larger than {MAX_PUBLICATION_BYTES} bytes"
        return data, ""
    finally:
        os.close(fd)
