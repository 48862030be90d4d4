"""run usage and task budgets

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Runs keep what the agent reported it used (tokens in and out, cost, model, turns), so
``capataz run show``, the API and ``/metrics`` can tell what each run and each agent
cost; the agent's name is the task's. Tasks keep their own budget (``{"tokens": …,
"usd": …}``, NULL for the agent's default), which a run past it is stopped by.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tokens_in", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("tokens_out", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("model", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("turns", sa.Integer(), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("budget")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("turns")
        batch_op.drop_column("model")
        batch_op.drop_column("cost_usd")
        batch_op.drop_column("tokens_out")
        batch_op.drop_column("tokens_in")
