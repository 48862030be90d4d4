"""The one schema of capataz's database, declared with SQLAlchemy Core.

Every type here works unchanged on SQLite and PostgreSQL, so the same code and the same
test suite serve both. The Alembic migrations in ``migrations/`` must reproduce this
metadata exactly; a test compares the migrated database against it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "UTCDateTime",
    "api_tokens",
    "audit",
    "audit_pending",
    "context_entries",
    "decisions",
    "directives",
    "escalations",
    "events",
    "file_changes",
    "metadata",
    "planner_calls",
    "runners",
    "runs",
    "secrets",
    "steps",
    "task_dependencies",
    "tasks",
    "violations",
]

# Stable constraint names, so migrations can refer to them on both databases.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone type: SQLAlchemy stores the wall-clock digits and drops the
    offset, so an aware non-UTC value would be silently shifted and values would come
    back naive. Converting to UTC on the way in and tagging UTC on the way out gives
    both databases the same behaviour and keeps string comparison on SQLite correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: capataz stores only aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); BIGINT would not.
BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("instruction", sa.Text, nullable=False),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=3),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=True, unique=True),
    sa.Column("allow_high", sa.Boolean, nullable=False, default=False),
    sa.Column("base_commit", sa.Text, nullable=True),
    sa.Column("lease_owner", sa.Text, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    # Grows by one on every claim (and on cancel): a result carrying an older token
    # comes from a runner that lost the task and is refused.
    sa.Column("fencing_token", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    # The task's own budget ({"tokens": int|null, "usd": float|null}); NULL: the
    # agent's default ([agents.X] budget).
    sa.Column("budget", sa.JSON, nullable=True),
)
# The claim query: WHERE status = 'ready' ORDER BY priority DESC, created_at.
sa.Index("ix_tasks_claim", tasks.c.status, tasks.c.priority.desc(), tasks.c.created_at)
sa.Index("ix_tasks_run_after", tasks.c.run_after)
# The sweeper: WHERE status = 'running' AND lease_expires_at < now.
sa.Index("ix_tasks_lease", tasks.c.status, tasks.c.lease_expires_at)
# Paged lists: oldest first, all or in one state.
sa.Index("ix_tasks_created_at", tasks.c.created_at)
sa.Index("ix_tasks_status_created_at", tasks.c.status, tasks.c.created_at)

task_dependencies = sa.Table(
    "task_dependencies",
    metadata,
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "depends_on_id",
        sa.Text,
        sa.ForeignKey("tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)
# Waking dependents looks the edge up from the dependency's side.
sa.Index("ix_task_dependencies_depends_on_id", task_dependencies.c.depends_on_id)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("runner_id", sa.Text, nullable=False),
    sa.Column("fencing_token", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Column("decision", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("wall_seconds", sa.Float, nullable=True),
    sa.Column("cpu_seconds", sa.Float, nullable=True),
    sa.Column("peak_memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("log_tail", sa.Text, nullable=True),
    # What the pipeline said about the run (e.g. "landed", "rejected"); ``outcome`` is
    # the task state the runner reported, which the fail rate is computed from.
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("result_commit", sa.Text, nullable=True),
    sa.Column("landed_commit", sa.Text, nullable=True),
    # The result's diff against its base (capped), kept so the panel can show it
    # wherever the runner's repository is.
    sa.Column("diff", sa.Text, nullable=True),
    # A remote runner's claim request id: a claim retried after a lost response
    # returns the run it already made instead of claiming a second task.
    sa.Column("claim_key", sa.Text, nullable=True),
    # The newest step/log record number a remote runner stored for the run (resent
    # records at or below it are dropped).
    sa.Column("record_seq", sa.BigInteger, nullable=True),
    # What the agent reported it used (a preset's reader); NULL when nothing read it.
    sa.Column("tokens_in", sa.BigInteger, nullable=True),
    sa.Column("tokens_out", sa.BigInteger, nullable=True),
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Column("model", sa.Text, nullable=True),
    sa.Column("turns", sa.Integer, nullable=True),
)
sa.Index("ix_runs_task_id", runs.c.task_id)
sa.Index("ix_runs_claim_key", runs.c.claim_key)
sa.Index("ix_runs_started_at", runs.c.started_at)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("outcome", sa.Text, nullable=True),
)
sa.Index("ix_steps_run_id", steps.c.run_id)

runners = sa.Table(
    "runners",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
    # Set by a sweeper when the runner's heartbeats stopped (reported offline once).
    sa.Column("silent_since", UTCDateTime, nullable=True),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
sa.Index("ix_decisions_run_id", decisions.c.run_id)

violations = sa.Table(
    "violations",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("suggestion", sa.Text, nullable=False),
    sa.Column("file", sa.Text, nullable=True),
    sa.Column("line", sa.Integer, nullable=True),
    sa.Column("gate", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
)
sa.Index("ix_violations_run_id", violations.c.run_id)

file_changes = sa.Table(
    "file_changes",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("lines_added", sa.Integer, nullable=False),
    sa.Column("lines_removed", sa.Integer, nullable=False),
    sa.Column("binary", sa.Boolean, nullable=False),
)
sa.Index("ix_file_changes_run_id", file_changes.c.run_id)

# A run waiting for a human. The runner keeps its lease meanwhile; the row is closed
# when the answer arrives or when the lease ends some other way.
escalations = sa.Table(
    "escalations",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
    sa.Column("fencing_token", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("decision", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("decided_by", sa.Text, nullable=True),
    sa.Column("answered_at", UTCDateTime, nullable=True),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    # What the human is asked to judge: violations, file changes and the diff.
    sa.Column("details", sa.JSON, nullable=True),
)
sa.Index("ix_escalations_task_id", escalations.c.task_id)

# Bearer tokens of the HTTP API. Only the SHA-256 of a token is kept: a leaked
# database does not leak working credentials, and lookup by hash is constant-time in
# the token's content.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# Append-only hash chain (see _audit_sql.py and docs/audit.md). seq is assigned under a
# lock as the previous seq + 1 (by the writer on SQLite, by the sealer on PostgreSQL), so
# the chain order and the key order are the same.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
)

# Audit entries written but not yet sealed into the chain (PostgreSQL's writers; see
# _audit_sql.py). The sealer moves them into ``audit`` in the order it finds them
# committed and deletes them here in the same transaction; ``id`` only orders a batch.
audit_pending = sa.Table(
    "audit_pending",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
)

# The live event stream (``GET /events``), typed and versioned (see events.py). Ids are
# assigned in commit order (inserts hold an advisory lock to commit; see _event_sql.py),
# so a reader that resumes after id N misses nothing. Old events are pruned by the sweeper.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=True),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
)
sa.Index("ix_events_task_id", events.c.task_id)
sa.Index("ix_events_run_id", events.c.run_id)
sa.Index("ix_events_at", events.c.at)

# The vault: secret values encrypted with the master key (Fernet; see vault.py). Only
# ciphertext is ever written; the name and who may use it are not secret.
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
    sa.Column("updated_by", sa.Text, nullable=False),
)

# The context store: values tasks publish for the tasks after them, encrypted like the
# vault. ``task_id`` is the publishing task (None when set by hand).
context_entries = sa.Table(
    "context_entries",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
)
sa.Index("ix_context_entries_task_id", context_entries.c.task_id)

# The planner's proposals (docs/planner.md): a directive is a titled batch of tasks
# with dependencies by local name, queued all at once when an operator applies it.
# ``tasks`` holds the proposal as the planner gave it (validated), ``created_task_ids``
# the ids of the tasks applying it created, in the proposal's order; ``raw_answer`` (masked)
# is kept only for a directive refused as invalid, so a person can see what came back.
directives = sa.Table(
    "directives",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("tasks", sa.JSON, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("usage", sa.JSON, nullable=False),
    sa.Column("raw_answer", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("decided_by", sa.Text, nullable=True),
    sa.Column("decided_at", UTCDateTime, nullable=True),
    sa.Column("created_task_ids", sa.JSON, nullable=False),
)
# Lists: newest first, all or in one status.
sa.Index("ix_directives_status_created_at", directives.c.status, directives.c.created_at)
sa.Index("ix_directives_created_at", directives.c.created_at)

# One row per call to the planner's model API, failed ones included (docs/planner.md).
planner_calls = sa.Table(
    "planner_calls",
    metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("tokens_in", sa.Integer, nullable=False),
    sa.Column("tokens_out", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Column("directives", sa.Integer, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)
