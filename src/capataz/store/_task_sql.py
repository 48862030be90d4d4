"""SQL on task rows and dependency edges that several facades share (``store.tasks``
adds and reads, ``store.leases`` moves dependents along when a task ends): inserting a
batch, loading tasks with their dependencies, releasing or cascading dependents. No
transaction of its own: the facades call it inside theirs. Private to the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from capataz.events import EventType
from capataz.store import _audit_sql, _event_sql
from capataz.store.errors import DependencyCycleError, TaskExistsError, UnknownDependencyError
from capataz.store.graph import find_cycle
from capataz.store.records import NewTask, Task
from capataz.store.schema import UTCDateTime, runs, task_dependencies, tasks
from capataz.store.statuses import RunStatus, TaskState

__all__ = ["insert_batch", "load", "load_page", "release_dependents", "release_or_cascade"]


def insert_batch(
    conn: sa.Connection,
    specs: Sequence[NewTask],
    ids: list[str],
    now: datetime,
    actor: str,
) -> list[str]:
    """Insert ``specs`` (with ``ids``) and their edges; returns, per spec, the id of the
    task that stands for it: its own, or the existing one with its idempotency key."""
    keys = [spec.idempotency_key for spec in specs if spec.idempotency_key]
    known_keys = {
        row.idempotency_key: row.id
        for row in conn.execute(
            sa.select(tasks.c.idempotency_key, tasks.c.id).where(tasks.c.idempotency_key.in_(keys))
        )
    }
    alias = {
        task_id: known_keys[spec.idempotency_key]
        for spec, task_id in zip(specs, ids, strict=True)
        if spec.idempotency_key in known_keys
    }
    new = {task_id: spec for spec, task_id in zip(specs, ids, strict=True) if task_id not in alias}
    taken = conn.execute(sa.select(tasks.c.id).where(tasks.c.id.in_(new))).scalars().first()
    if taken:
        raise TaskExistsError(f"task {taken} already exists", fix="choose another id")
    edges = {tid: sorted({alias.get(d, d) for d in spec.depends_on}) for tid, spec in new.items()}
    outside = {dep for deps in edges.values() for dep in deps if dep not in new}
    states = {
        row.id: TaskState(row.status)
        for row in conn.execute(
            sa.select(tasks.c.id, tasks.c.status).where(tasks.c.id.in_(outside))
        )
    }
    for tid, deps in edges.items():
        missing = [dep for dep in deps if dep not in new and dep not in states]
        if missing:
            raise UnknownDependencyError(
                f"task {tid} depends on unknown task {missing[0]}",
                fix="add that task first, or in the same import",
            )
    cycle = find_cycle(edges)
    if cycle:
        raise DependencyCycleError(
            f"dependency cycle: {' -> '.join(cycle)}",
            fix="remove one of these dependencies; a task in a cycle could never run",
        )
    rows: list[dict[str, Any]] = []
    for offset, tid in enumerate(ordered(edges)):
        spec = new[tid]
        status, reason = initial_state({dep: states[dep] for dep in edges[tid]})
        states[tid] = status
        # Strictly increasing creation times keep a batch's own order in claims.
        created = now + timedelta(microseconds=offset)
        rows.append(
            {
                "id": tid,
                "title": spec.title,
                "instruction": spec.instruction,
                "agent": spec.agent,
                "status": status.value,
                "priority": spec.priority,
                "attempts": 0,
                "max_attempts": spec.max_attempts,
                "labels": sorted(set(spec.labels)),
                "run_after": spec.run_after or created,
                "idempotency_key": spec.idempotency_key,
                "allow_high": spec.allow_high,
                "base_commit": spec.base_commit,
                "fencing_token": 0,
                "created_at": created,
                "updated_at": created,
                "reason": reason,
                "budget": spec.budget.as_json() if spec.budget is not None else None,
            }
        )
    if rows:
        conn.execute(tasks.insert(), rows)
    dep_rows = [{"task_id": t, "depends_on_id": d} for t, deps in edges.items() for d in deps]
    if dep_rows:
        conn.execute(task_dependencies.insert(), dep_rows)
    for row in rows:
        payload = {
            "status": row["status"],
            "depends_on": edges[row["id"]],
            "priority": row["priority"],
            "reason": row["reason"],
        }
        _audit_sql.append(
            conn, at=now, actor=actor, action="task.created", subject=row["id"], payload=payload
        )
    created_events: list[tuple[str | None, dict[str, Any]]] = [
        (
            str(row["id"]),
            {
                "title": row["title"],
                "agent": row["agent"],
                "status": row["status"],
                "priority": row["priority"],
                "depends_on": edges[row["id"]],
            },
        )
        for row in rows
    ]
    _event_sql.emit_many(conn, EventType.TASK_CREATED, at=now, items=created_events)
    return [alias.get(tid, tid) for tid in ids]


def ordered(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Tasks of an acyclic batch, each after the batch tasks it depends on, otherwise in
    the order given."""
    done: set[str] = set()
    result: list[str] = []

    def visit(tid: str) -> None:
        stack = [(tid, iter(edges[tid]))]
        while stack:
            node, deps = stack[-1]
            dep = next((d for d in deps if d in edges and d not in done), None)
            if dep is None:
                stack.pop()
                if node not in done:
                    done.add(node)
                    result.append(node)
            else:
                stack.append((dep, iter(edges[dep])))

    for tid in edges:
        visit(tid)
    return result


def initial_state(deps: Mapping[str, TaskState]) -> tuple[TaskState, str | None]:
    """A new task is ready when every dependency is done, never runs when one has ended
    badly, and otherwise waits."""
    for dep, state in sorted(deps.items()):
        if state in (TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED):
            return _inherited(state), f"dependency {dep} ended {state}"
    if all(state is TaskState.DONE for state in deps.values()):
        return TaskState.READY, None
    return TaskState.PENDING, None


def _inherited(state: TaskState) -> TaskState:
    """A cancelled dependency cancels its dependents; a failed or blocked one blocks them."""
    return TaskState.CANCELLED if state is TaskState.CANCELLED else TaskState.BLOCKED


# The reason of a task's newest run that ended badly, for Task.last_error: one lookup
# per task through ix_runs_task_id.
_LAST_RUN_ERROR = (
    sa.select(runs.c.reason)
    .where(
        runs.c.task_id == tasks.c.id,
        sa.or_(
            sa.and_(
                runs.c.status == RunStatus.FINISHED.value,
                runs.c.outcome.in_((TaskState.FAILED.value, TaskState.BLOCKED.value)),
            ),
            runs.c.status == RunStatus.LOST.value,
        ),
    )
    .order_by(runs.c.started_at.desc(), runs.c.id.desc())
    .limit(1)
    .correlate(tasks)
    .scalar_subquery()
    .label("last_run_error")
)
_TASK_COLUMNS = (tasks, _LAST_RUN_ERROR)


def load(conn: sa.Connection, where: Any, ids: Iterable[str] | None = None) -> list[Task]:
    """Tasks matching ``where`` (and ``ids``), oldest first, with their dependencies."""
    query = sa.select(*_TASK_COLUMNS).where(where)
    if ids is not None:
        query = query.where(tasks.c.id.in_(list(ids)))
    found = conn.execute(query.order_by(tasks.c.created_at, tasks.c.id)).all()
    deps: dict[str, list[str]] = {}
    matching = query.with_only_columns(tasks.c.id)
    for edge in conn.execute(
        sa.select(task_dependencies).where(task_dependencies.c.task_id.in_(matching))
    ):
        deps.setdefault(edge.task_id, []).append(edge.depends_on_id)
    return [Task.from_row(row, deps.get(row.id, ())) for row in found]


def load_page(conn: sa.Connection, where: Any, limit: int, offset: int) -> tuple[list[Task], int]:
    """One page of the tasks matching ``where``, oldest first, and how many match in
    all. LIMIT/OFFSET and COUNT run in SQL (ix_tasks_created_at and
    ix_tasks_status_created_at serve the order), and dependencies are read in one query
    for the page's ids only: a page of a big queue costs a page, not the queue."""
    total = conn.execute(sa.select(sa.func.count()).select_from(tasks).where(where)).scalar_one()
    query = sa.select(*_TASK_COLUMNS).where(where).order_by(tasks.c.created_at, tasks.c.id)
    found = conn.execute(query.limit(limit).offset(offset)).all()
    deps: dict[str, list[str]] = {}
    if found:
        edges = sa.select(task_dependencies).where(
            task_dependencies.c.task_id.in_([row.id for row in found])
        )
        for edge in conn.execute(edges.order_by(task_dependencies.c.depends_on_id)):
            deps.setdefault(edge.task_id, []).append(edge.depends_on_id)
    return [Task.from_row(row, deps.get(row.id, ())) for row in found], int(total)


def release_or_cascade(
    conn: sa.Connection, task_id: str, state: TaskState, now: datetime, actor: str
) -> list[str]:
    """Move the waiting dependents of a task that just reached ``state``: when it is
    done, those whose dependencies are now all done become ready; when it ended failed,
    blocked or cancelled, they (and theirs, transitively) never run and say why.
    Returns the ids it changed."""
    if state is TaskState.DONE:
        if conn.dialect.name == "postgresql":
            # Lock the waiting dependents first, so that the check below runs after any
            # other dependency that finished at the same moment has committed: two
            # completions that both checked before either committed would each see the
            # other still running, and the dependent would wait forever.
            conn.execute(_LOCK_DEPENDENTS, {"task_id": task_id})
        return release_dependents(conn, task_id, now, actor)
    if state not in (TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED):
        return []
    changed: list[str] = []
    frontier: list[tuple[str, TaskState]] = [(task_id, state)]
    while frontier:
        dep, dep_state = frontier.pop()
        target, reason = _inherited(dep_state), f"dependency {dep} ended {dep_state}"
        params = {"task_id": dep, "now": now, "target": target.value, "reason_": reason}
        for tid in _moved(conn, _CASCADE, params):
            _audit_sql.append(
                conn,
                at=now,
                actor=actor,
                action=f"task.{target}",
                subject=tid,
                payload={"reason": reason},
            )
            _event_sql.emit(
                conn,
                EventType.TASK_STATE,
                at=now,
                task_id=tid,
                status=target.value,
                was=TaskState.PENDING.value,
                reason=reason,
            )
            changed.append(tid)
            frontier.append((tid, target))
    return changed


def release_dependents(conn: sa.Connection, task_id: str, now: datetime, actor: str) -> list[str]:
    """The task ``task_id`` is done: its waiting dependents whose dependencies are now
    all done become ready, audited and told. On PostgreSQL the caller has locked them
    (see :func:`release_or_cascade`). Returns their ids."""
    released = _moved(conn, _RELEASE, {"task_id": task_id, "now": now})
    for tid in released:
        _audit_sql.append(
            conn,
            at=now,
            actor=actor,
            action="task.ready",
            subject=tid,
            payload={"after": task_id},
        )
    _event_sql.emit_many(
        conn,
        EventType.TASK_STATE,
        at=now,
        items=[
            (tid, {"status": TaskState.READY.value, "was": TaskState.PENDING.value})
            for tid in released
        ],
    )
    return released


def _moved(conn: sa.Connection, stmt: sa.Update, params: dict[str, Any]) -> list[str]:
    return sorted(conn.execute(stmt, params).scalars().all())


def _dependents_update(*extra: Any) -> sa.Update:
    """UPDATE of the pending dependents of the task ``:task_id`` (with ``extra``
    conditions). Built once at import: building it costs more than running it."""
    dependents = sa.select(task_dependencies.c.task_id).where(
        task_dependencies.c.depends_on_id == sa.bindparam("task_id")
    )
    return (
        sa.update(tasks)
        .where(tasks.c.status == TaskState.PENDING.value, tasks.c.id.in_(dependents), *extra)
        .returning(tasks.c.id)
    )


def _unfinished_dependency() -> Any:
    other = task_dependencies.alias("other")
    dep_task = tasks.alias("dep_task")
    return (
        sa.select(sa.literal(1))
        .select_from(other.join(dep_task, dep_task.c.id == other.c.depends_on_id))
        .where(other.c.task_id == tasks.c.id, dep_task.c.status != TaskState.DONE.value)
        .exists()
    )


_NOW = sa.bindparam("now", type_=UTCDateTime())
# Dependents whose every dependency is now done become ready.
_RELEASE = _dependents_update(~_unfinished_dependency()).values(
    status=TaskState.READY.value, reason=None, updated_at=_NOW
)
# The waiting dependents' rows, locked in id order (so two lockers cannot deadlock).
_LOCK_DEPENDENTS = (
    sa.select(tasks.c.id)
    .where(
        tasks.c.status == TaskState.PENDING.value,
        tasks.c.id.in_(
            sa.select(task_dependencies.c.task_id).where(
                task_dependencies.c.depends_on_id == sa.bindparam("task_id")
            )
        ),
    )
    .order_by(tasks.c.id)
    .with_for_update()
)
# Dependents of a task that ended badly never run, and say why.
_CASCADE = _dependents_update().values(
    status=sa.bindparam("target"), reason=sa.bindparam("reason_"), updated_at=_NOW
)
