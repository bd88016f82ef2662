"""Version 4: ``mapping_reloads``, the requests to reload a running gateway's mapping and their outcome.

``gateway reload`` writes a request, signals the gateway and waits for the gateway to write
whether the new mapping was applied or refused. The table starts empty.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mapping_reloads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("process", sa.String(32), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(16), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("outcome", sa.String(12)),
        sa.Column("detail", sa.Text),
    )
    op.execute("UPDATE schema_version SET version = 4")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
