"""Version 11: repetitive production — production versions and cost collectors.

* ``production_versions``: per product and version the BOM + routing template a cost
  collector copies when it is created, and the posting periods (length, time zone);
  empty until master data with ``production_versions:`` is loaded;
* ``cost_collectors``: one per product, version, line and period, created by the writer on
  first use; its number is its order number in ``production_orders`` and every posting.

Two new tables; nothing already in the ledger changes.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import Dec, UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "production_versions",
        sa.Column("product", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "cost_collectors",
        sa.Column("number", sa.String(64), primary_key=True),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("line", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("closed_at", UtcDateTime),
        sa.Column("materials_value", Dec),
        sa.Column("activities_value", Dec),
        sa.Column("target_value", Dec),
        sa.Column("variance", Dec),
        sa.Column("currency", sa.String(3)),
    )
    op.create_index("ix_cost_collectors_period", "cost_collectors", ["period"])
    op.create_index("ix_cost_collectors_key", "cost_collectors", ["product", "version", "line", "period"], unique=True)
    op.execute("UPDATE schema_version SET version = 11")


def downgrade() -> None:
    raise NotImplementedError("the ledger is upgraded only; restore a backup to go back")
