"""Version 8: ``machine_states.job_reset_pending`` and ``job_change_unseen``, a job change's counters not read yet.

A ledger of version 7 did not keep them: every machine starts with none pending (what a
gateway of version 7 resumed with).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machine_states") as table:
        table.add_column(sa.Column("job_reset_pending", sa.Text, nullable=False, server_default=""))
        table.add_column(sa.Column("job_change_unseen", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE schema_version SET version = 8")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
