"""Version 5: ``mapping_versions``, every mapping applied through the workbench (who, when, the text, the change).

The table starts empty: the first apply records the mapping file as it was before it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("diff_summary", sa.Text, nullable=False),
    )
    op.execute("UPDATE schema_version SET version = 5")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
