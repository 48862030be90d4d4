"""events, diffs, claim keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

The live event stream gets its table; runs keep their diff and a remote runner's claim
key; escalations keep what the human is asked to judge; tasks get indexes for paged
lists.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_task_id", ["task_id"], unique=False)
        batch_op.create_index("ix_events_run_id", ["run_id"], unique=False)
        batch_op.create_index("ix_events_at", ["at"], unique=False)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("diff", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("claim_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("record_seq", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_runs_claim_key", ["claim_key"], unique=False)
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("details", sa.JSON(), nullable=True))
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("silent_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_tasks_status_created_at", ["status", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_created_at")
        batch_op.drop_index("ix_tasks_created_at")
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_column("silent_since")
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.drop_column("details")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_claim_key")
        batch_op.drop_column("record_seq")
        batch_op.drop_column("claim_key")
        batch_op.drop_column("diff")
    op.drop_table("events")
