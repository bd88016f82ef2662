"""Baseline: the ledger as it was before schema version numbers (version 1).

A ledger from before version numbers has every table of this version except
``schema_version``; it is stamped with this revision and gets that table here. Fresh
ledgers are never built by migrations (``schema.open_engine`` creates them from the
tables of the current version and stamps the head), so this revision holds no tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("schema_version"):
        op.create_table("schema_version", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("version", sa.Integer, nullable=False))
        op.execute("INSERT INTO schema_version (id, version) VALUES (1, 1)")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
