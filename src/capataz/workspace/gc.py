"""`capataz gc`: forget what capataz kept longer than anyone needs it.

Three kinds of leftovers grow without bound: rejected results in
``.capataz/rejected.git`` (kept for a human to inspect), workspaces a crashed run left
behind, and progress directories of finished tasks. :func:`collect` removes those older
than an age. It never removes what a run is using: a workspace is in use while a process
holds the shared lock beside it (the pipeline takes it before creating the workspace
and keeps it until the workspace is discarded), so gc takes that lock exclusively and
without waiting, and skips the workspace if it cannot; a workspace kept for a human's
edits is spared whatever its age, and a progress directory only goes once its task
finished and no workspace of the task is locked."""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from capataz.statedir import STATE_DIR
from capataz.workspace.isolated import lock_path
from capataz.workspace.landing import rejected_store
from capataz.workspace.objectstore import RejectedRef, RejectedStore, directory_bytes
from capataz.workspace.repo import Repository

__all__ = ["Collected", "GcReport", "collect"]


@dataclass(frozen=True)
class Collected:
    kind: str  # "rejected", "workspace" or "progress"
    name: str
    bytes: int
    age_seconds: float


@dataclass
class GcReport:
    dry_run: bool
    older_than: float
    freed: list[Collected] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # kind, name, why

    def totals(self) -> dict[str, dict[str, int]]:
        sums = {kind: {"count": 0, "bytes": 0} for kind in ("rejected", "workspace", "progress")}
        for item in self.freed:
            sums[item.kind]["count"] += 1
            sums[item.kind]["bytes"] += item.bytes
        return sums

    def as_json(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "olderThanSeconds": self.older_than,
            "freed": self.totals(),
            "totalBytes": sum(item.bytes for item in self.freed),
            "items": [
                {"kind": i.kind, "name": i.name, "bytes": i.bytes, "ageSeconds": int(i.age_seconds)}
                for i in self.freed
            ],
            "kept": [{"kind": k, "name": n, "why": w} for k, n, w in self.kept],
        }


def collect(
    repo: Repository, progress_root: Path, older_than: float, *, dry_run: bool = False
) -> GcReport:
    now = time.time()
    report = GcReport(dry_run=dry_run, older_than=older_than)
    _rejected(rejected_store(repo), now, report)
    _workspaces(repo.root / STATE_DIR / "workspaces", progress_root, now, report)
    _progress(progress_root, repo.root / STATE_DIR / "workspaces", now, report)
    return report


def _rejected(store: RejectedStore, now: float, report: GcReport) -> None:
    refs = store.refs()
    old = [r for r in refs if now - r.rejected_at > report.older_than]
    if not old:
        return
    kept = [r.ref for r in refs if r not in old]
    for item in old:
        size = _unique_bytes(store, item, kept)
        report.freed.append(Collected("rejected", item.ref, size, now - item.rejected_at))
    if not report.dry_run:
        store.drop(old)


def _unique_bytes(store: RejectedStore, item: RejectedRef, kept: list[str]) -> int:
    """Bytes only this rejected result holds (not the user's history, not what a
    remaining rejected result shares)."""
    done = store.git.run(
        "rev-list",
        "--objects",
        "--disk-usage",
        item.ref,
        "--not",
        *kept,
        "--alternate-refs",
        check=False,
    )
    text = done.stdout.decode().strip()
    return int(text) if done.returncode == 0 and text.isdigit() else 0


def _awaiting_human(progress_root: Path, task_id: str) -> bool:
    state = _state(progress_root / task_id)
    return bool(state and state.get("awaitingHuman"))


def _state(path: Path) -> dict[str, object] | None:
    try:
        loaded = json.loads((path / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _workspaces(root: Path, progress_root: Path, now: float, report: GcReport) -> None:
    if not root.is_dir():
        return
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        age = now - path.stat().st_mtime
        if age <= report.older_than:
            continue
        task_id = path.name.split(".", 1)[0]  # "<task-id>" or "<task-id>.<attempt>"
        if _awaiting_human(progress_root, task_id):
            report.kept.append(("workspace", path.name, "kept for a human's edits"))
            continue
        lock = lock_path(path)
        existed = lock.exists()
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.kept.append(("workspace", path.name, "in use by a running task"))
                continue
            report.freed.append(Collected("workspace", path.name, directory_bytes(path), age))
            if not report.dry_run:
                shutil.rmtree(path, ignore_errors=True)
            if not report.dry_run or not existed:  # a dry run leaves no lock file behind
                lock.unlink(missing_ok=True)


def _in_use(workspaces: Path, task_id: str) -> bool:
    """Whether any workspace of ``task_id`` is locked by a run."""
    for lock in [workspaces / f"{task_id}.lock", *workspaces.glob(f"{task_id}.*.lock")]:
        if not lock.exists():
            continue
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False


def _progress(root: Path, workspaces: Path, now: float, report: GcReport) -> None:
    if not root.is_dir():
        return
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        state = _state(path)
        if state is None:
            continue  # not a progress directory capataz wrote, or being rewritten
        age = now - (path / "progress.json").stat().st_mtime
        if age <= report.older_than:
            continue
        if not state.get("completedAt") or state.get("awaitingHuman"):
            report.kept.append(("progress", path.name, "the task has not finished"))
            continue
        if _in_use(workspaces, path.name):
            report.kept.append(("progress", path.name, "in use by a running task"))
            continue
        report.freed.append(Collected("progress", path.name, directory_bytes(path), age))
        if not report.dry_run:
            shutil.rmtree(path, ignore_errors=True)
